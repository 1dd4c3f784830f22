// The chat screen: download + verify the bundle (manifest.json sizes and sha256, cached for
// offline use), then chat with the model on onnxruntime-web, streaming tokens, with a stop button.
import * as ort from "onnxruntime-web";
import { Template } from "@huggingface/jinja";

import { Generator, TextStreamer } from "./generate.js";
import { Tokenizer } from "./tokenizer.js";

const BUNDLE = new URL("bundle/", location.href); // `qwen-edge serve-demo OUT` serves OUT here
const CACHE = "qwen-edge-bundle-v1";
const $ = (id) => document.getElementById(id);
const notCached = [];
const state = (s) => (document.body.dataset.state = s);

function fail(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "stopped";
  state("error");
}

async function sha256(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// One file of the bundle: from the cache if there, else downloaded with progress; then verified.
async function fetchVerified(name, entry, progress) {
  const url = new URL(name, BUNDLE);
  const cache = "caches" in self ? await caches.open(CACHE) : null;
  let response = cache && (await cache.match(url));
  const fromCache = Boolean(response);
  if (!response) response = await fetch(url);
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}; is the bundle served at ${BUNDLE}?`);
  const reader = response.body.getReader();
  const bytes = new Uint8Array(entry.bytes);
  let offset = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (offset + value.length > bytes.length) throw new Error(`${name} is larger than its manifest says: re-export the bundle`);
    bytes.set(value, offset);
    offset += value.length;
    progress(value.length);
  }
  if (offset !== entry.bytes || (await sha256(bytes)) !== entry.sha256) {
    if (cache) await cache.delete(url);
    throw new Error(`${name} failed verification (size or sha256 differs from manifest.json): re-export or re-download the bundle`);
  }
  if (cache && !fromCache) {
    // Best effort: a browser may refuse a large entry (quota; headless Chromium refuses ~300 MB):
    // the app still runs, it only downloads again next time.
    try {
      await cache.put(url, new Response(bytes));
    } catch (e) {
      console.warn(`not cached for offline use: ${name}: ${e.message || e}`);
      notCached.push(name);
    }
  }
  return bytes;
}

async function load() {
  state("loading");
  if (!crypto?.subtle) throw new Error("open this page over https or http://localhost (see README): the browser hides crypto.subtle elsewhere");
  const manifest = await (await fetch(new URL("manifest.json", BUNDLE))).json();
  const graph = manifest.runtime_file || manifest.model_file;
  const names = [graph, `${manifest.model_file}.data`, "tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"];
  const missing = names.filter((n) => !manifest.files[n]);
  if (manifest.format !== "onnx" || manifest.graph !== "ort" || missing.length) {
    throw new Error(`this bundle is not a mobile export (${missing.join(", ") || manifest.graph}): run qwen-edge export MODEL -o OUT --target mobile`);
  }
  const total = names.reduce((sum, n) => sum + manifest.files[n].bytes, 0);
  const needGb = (total * 1.6) / 1e9;
  if (navigator.deviceMemory && navigator.deviceMemory < needGb) {
    throw new Error(`this device reports ${navigator.deviceMemory} GB of memory; the model needs about ${needGb.toFixed(1)} GB`);
  }
  let done = 0;
  const bar = $("progress");
  bar.hidden = false;
  const progress = (n) => {
    done += n;
    bar.value = done / total;
    $("status").textContent = `downloading the model: ${(done / 1e6).toFixed(0)} / ${(total / 1e6).toFixed(0)} MB`;
  };
  const files = {};
  for (const name of names) files[name] = await fetchVerified(name, manifest.files[name], progress);
  bar.hidden = true;
  $("status").textContent = "starting the model…";
  const text = (name) => JSON.parse(new TextDecoder().decode(files[name]));
  const config = text("config.json");
  const generation = text("generation_config.json");
  const tokenizerConfig = text("tokenizer_config.json");
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.wasmPaths = new URL("vendor/ort/", location.href).href;
  const session = await ort.InferenceSession.create(files[graph], {
    executionProviders: ["wasm"],
    externalData: [{ path: `${manifest.model_file}.data`, data: files[`${manifest.model_file}.data`] }],
  });
  const tokenizer = new Tokenizer(text("tokenizer.json"));
  const eos = [].concat(generation.eos_token_id ?? config.eos_token_id ?? []);
  return {
    tokenizer,
    template: new Template(tokenizerConfig.chat_template),
    eosToken: typeof tokenizerConfig.eos_token === "string" ? tokenizerConfig.eos_token : tokenizerConfig.eos_token?.content,
    generator: new Generator(ort, session, { ...config, eos_token_id: eos }),
    threads: ort.env.wasm.numThreads,
  };
}

function bubble(role, text = "") {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("messages").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

async function main() {
  if ("serviceWorker" in navigator && self.isSecureContext) navigator.serviceWorker.register("sw.js").catch(() => {});
  let model;
  try {
    model = await load();
  } catch (e) {
    return fail(String(e.message || e));
  }
  $("status").textContent =
    `ready · onnxruntime-web (wasm, ${model.threads} thread${model.threads > 1 ? "s" : ""})` +
    (notCached.length ? " · not stored for offline use (browser storage refused it)" : "");
  $("prompt").disabled = $("send").disabled = false;
  state("ready");
  const messages = [];
  let controller = null;
  $("stop").onclick = () => controller?.abort();
  $("composer").onsubmit = async (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || controller) return;
    $("prompt").value = "";
    messages.push({ role: "user", content: text });
    bubble("user", text);
    const out = bubble("assistant");
    const prompt = model.template.render({ messages, add_generation_prompt: true, eos_token: model.eosToken });
    const ids = model.tokenizer.encode(prompt);
    const streamer = new TextStreamer(model.tokenizer, ["<|im_end|>"]);
    controller = new AbortController();
    $("send").hidden = true;
    $("stop").hidden = false;
    state("generating");
    const start = performance.now();
    let first = 0;
    let count = 0;
    try {
      for await (const token of model.generator.generate(ids, { maxNewTokens: 256, signal: controller.signal })) {
        if (!first) first = performance.now();
        count++;
        out.textContent += streamer.put(token);
        out.dataset.tokens = String(count);
        const rate = count > 1 ? ((count - 1) * 1000) / (performance.now() - first) : 0;
        $("speed").textContent = `${count} tokens · ${rate.toFixed(1)} tokens/s · first token ${((first - start) / 1000).toFixed(2)} s`;
        await new Promise((r) => setTimeout(r, 0)); // let the page paint and the stop button work
      }
      out.textContent += streamer.end();
    } catch (e) {
      fail(String(e.message || e));
    }
    messages.push({ role: "assistant", content: out.textContent });
    state(controller.signal.aborted ? "stopped" : "done");
    controller = null;
    $("send").hidden = false;
    $("stop").hidden = true;
  };
}

main();
