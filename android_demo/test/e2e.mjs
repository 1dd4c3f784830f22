// End to end in headless Chromium emulating a phone (Pixel 7 viewport, touch, 4x CPU throttling):
// load the app, wait for the model, type a prompt, see tokens stream in, press stop, screenshot.
// Usage: [THROTTLE=4] node test/e2e.mjs URL SCREENSHOT.png [PROMPT] [--until-done]; prints one JSON line.
import { chromium, devices } from "playwright-core";

const [url, shot, prompt = "Hello, who are you?", mode] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const result = { url };
try {
  const context = await browser.newContext({ ...devices["Pixel 7"] });
  const page = await context.newPage();
  page.on("console", (m) => m.type() === "error" && (result.console = [...(result.console || []), m.text()]));
  const cdp = await context.newCDPSession(page);
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: Number(process.env.THROTTLE || 4) });
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), null, { timeout: 600000 });
  result.load_s = (Date.now() - t0) / 1000;
  result.status = await page.textContent("#status");
  result.isolated = await page.evaluate(() => self.crossOriginIsolated);
  if ((await page.evaluate(() => document.body.dataset.state)) === "error") {
    result.error = await page.textContent("#error");
  } else {
    await page.tap("#prompt");
    await page.fill("#prompt", prompt);
    await page.tap("#send");
    const seen = [];
    const until = mode === "--until-done" ? ["done", "stopped", "error"] : null;
    for (let i = 0; i < 6000; i++) {
      const n = await page.evaluate(() => Number(document.querySelector(".assistant")?.dataset.tokens || 0));
      if (!seen.length || n !== seen[seen.length - 1]) seen.push(n);
      const s = await page.evaluate(() => document.body.dataset.state);
      if (until ? until.includes(s) : n >= 8) break;
      await page.waitForTimeout(20);
    }
    result.token_counts_seen = seen;
    if (!until) {
      await page.tap("#stop");
      await page.waitForFunction(() => ["stopped", "done"].includes(document.body.dataset.state), null, { timeout: 60000 });
    }
    result.state = await page.evaluate(() => document.body.dataset.state);
    result.tokens = await page.evaluate(() => Number(document.querySelector(".assistant")?.dataset.tokens || 0));
    result.answer = await page.textContent(".assistant");
    result.speed = await page.textContent("#speed");
    result.stop_visible = await page.isVisible("#stop");
  }
  await page.screenshot({ path: shot });
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
  console.log(JSON.stringify(result));
}
