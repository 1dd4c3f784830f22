// End to end in headless Chromium emulating a phone (Pixel 7 viewport, touch, CPU throttling): load
// the app, wait for the model, send each prompt as a user would (tap, type, tap Send), read what the
// app painted and measured, optionally tap Stop, screenshot. Waits poll every 100 ms; what the test
// asserts comes from the app's own log (window.qwenEdge.replies: tokens per paint, TTFT, decode
// rate, prompt tokens reused), not from when the poll happened to look.
// Usage: node test/e2e.mjs URL SHOT.png [--prompt TEXT]... [--stop-after N] [--temperature T]
//        [--max-tokens N] [--throttle R] [--new-chat] [--webgpu]      (prints one JSON line)
// --stop-after N taps Stop in every turn once N tokens are on screen; --new-chat taps New chat at
// the end (after the screenshot) and reports what is left on screen. --webgpu starts Chromium with
// WebGPU on (here: SwiftShader's CPU adapter, which the app uses only when the URL has ?ep=webgpu).
import { chromium, devices } from "playwright-core";

const [url, shot, ...rest] = process.argv.slice(2);
const opt = { prompts: [], throttle: Number(process.env.THROTTLE || 4) };
for (let i = 0; i < rest.length; i += 2) {
  const [flag, value] = [rest[i], rest[i + 1]];
  if (flag === "--new-chat" || flag === "--webgpu") {
    opt[flag === "--webgpu" ? "webgpu" : "newChat"] = true;
    i--;
  } else if (flag === "--prompt") opt.prompts.push(value);
  else if (flag === "--stop-after") opt.stopAfter = Number(value);
  else if (flag === "--temperature") opt.temperature = value;
  else if (flag === "--max-tokens") opt.maxTokens = value;
  else if (flag === "--throttle") opt.throttle = Number(value);
  else throw new Error(`unknown option ${flag}`);
}
if (!opt.prompts.length) opt.prompts.push("Hello, who are you?");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", opt.webgpu ? "--enable-unsafe-webgpu" : "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = { url, turns: [] };
const stateIs = (page, states, timeout) =>
  page.waitForFunction((s) => s.includes(document.body.dataset.state), states, { timeout, polling: 100 });
try {
  const context = await browser.newContext({ ...devices["Pixel 7"] });
  const page = await context.newPage();
  page.on("console", (m) => m.type() === "error" && (result.console = [...(result.console || []), m.text()]));
  page.on("pageerror", (e) => (result.console = [...(result.console || []), String(e)]));
  const cdp = await context.newCDPSession(page);
  if (opt.throttle > 1) await cdp.send("Emulation.setCPUThrottlingRate", { rate: opt.throttle });
  const t0 = Date.now();
  await page.goto(url);
  await stateIs(page, ["ready", "error"], 900000);
  result.load_s = (Date.now() - t0) / 1000;
  result.status = await page.textContent("#status");
  result.model = await page.textContent("#model");
  result.isolated = await page.evaluate(() => self.crossOriginIsolated);
  result.device = await page.evaluate(() => window.qwenEdge?.device);
  if ((await page.evaluate(() => document.body.dataset.state)) === "error") {
    result.error = await page.textContent("#error");
  } else {
    if (opt.temperature !== undefined || opt.maxTokens !== undefined) {
      await page.tap("#settings-button");
      if (opt.temperature !== undefined) await page.fill("#set-temperature", String(opt.temperature));
      if (opt.maxTokens !== undefined) await page.fill("#set-max-tokens", String(opt.maxTokens));
      await page.tap("#settings-button");
    }
    for (const prompt of opt.prompts) {
      await page.tap("#prompt");
      await page.fill("#prompt", prompt);
      await page.tap("#send");
      if (opt.stopAfter) {
        await page.waitForFunction(
          (n) => Number([...document.querySelectorAll(".assistant")].pop()?.dataset.tokens || 0) >= n || document.body.dataset.state !== "generating",
          opt.stopAfter, { timeout: 900000, polling: "raf" },
        ); // fmt: tap as soon as a reader would see n tokens
        await page.tap("#stop");
      }
      await stateIs(page, ["done", "stopped", "error"], 1800000);
      const turn = await page.evaluate(() => ({
        state: document.body.dataset.state,
        answer: [...document.querySelectorAll(".assistant")].pop()?.textContent,
        reply: window.qwenEdge?.replies.at(-1),
        error: document.getElementById("error").hidden ? undefined : document.getElementById("error").textContent,
      }));
      result.turns.push(turn);
      if (turn.state === "error") break;
    }
    result.speed = await page.textContent("#speed");
    result.stop_visible = await page.isVisible("#stop");
    result.bubbles = await page.evaluate(() => document.querySelectorAll(".msg").length);
  }
  await page.screenshot({ path: shot });
  if (opt.newChat && !result.error) {
    await page.tap("#new-chat");
    result.after_new_chat = await page.evaluate(() => ({ bubbles: document.querySelectorAll(".msg").length, speed: document.getElementById("speed").textContent }));
  }
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
  console.log(JSON.stringify(result));
}
