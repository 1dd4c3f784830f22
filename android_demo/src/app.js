// The chat screen: download + verify the bundle (manifest.json sizes and sha256, cached for
// offline use), then chat with the model on onnxruntime-web in a worker (src/worker.js), streaming
// tokens, with stop, new chat and sampling settings. The worker keeps the KV cache between turns.
import { Template } from "@huggingface/jinja";

import { TextStreamer } from "./generate.js";
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

// Sampling settings: the model's generation_config.json where it has them, else Qwen2.5's published
// defaults; the user's changes are kept on this device.
const SETTINGS = "qwen-edge-settings";
const CONTEXT_LIMIT = 4096; // positions kept for a chat on a phone: the KV cache of the 0.5B is 12 KB per token

function loadSettings(generation) {
  const defaults = {
    temperature: generation.temperature ?? 0.7,
    topP: generation.top_p ?? 0.8,
    topK: generation.top_k ?? 20,
    maxNewTokens: 512,
  };
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS) || "{}");
  } catch {
    saved = {};
  }
  return { ...defaults, ...saved };
}

function bindSettings(settings) {
  const fields = { temperature: "set-temperature", topP: "set-top-p", maxNewTokens: "set-max-tokens" };
  for (const [key, id] of Object.entries(fields)) {
    const input = $(id);
    const shown = $(`${id}-value`);
    input.value = settings[key];
    if (shown) shown.textContent = String(settings[key]);
    input.oninput = () => {
      const value = Number(input.value);
      if (!Number.isFinite(value)) return;
      settings[key] = key === "maxNewTokens" ? Math.max(1, Math.round(value)) : value;
      if (shown) shown.textContent = String(settings[key]);
      localStorage.setItem(SETTINGS, JSON.stringify({ temperature: settings.temperature, topP: settings.topP, maxNewTokens: settings.maxNewTokens }));
    };
  }
  $("settings-button").onclick = () => {
    $("settings").hidden = !$("settings").hidden;
    $("settings-button").setAttribute("aria-expanded", String(!$("settings").hidden));
  };
}

// A name a person recognizes: the source file's name without its extension, or the config's type.
function modelName(manifest, config) {
  const path = manifest.source?.path || "";
  const file = path.split(/[\\/]/).pop().replace(/\.(gguf|safetensors)$/i, "");
  return file || config._name_or_path || config.model_type || "model";
}

// Where the model runs: WebGPU when the bundle has its WebGPU model and the browser a GPU adapter
// (not a CPU fallback such as SwiftShader, slower than WASM), else WebAssembly on the CPU.
// ?ep=wasm or ?ep=webgpu overrides (webgpu then takes a fallback adapter too).
async function chooseDevice(manifest) {
  const asked = new URLSearchParams(location.search).get("ep");
  if (!manifest.webgpu) return { device: "wasm", why: "this bundle has no WebGPU model" };
  if (asked === "wasm") return { device: "wasm", why: "asked for" };
  const adapter = await navigator.gpu?.requestAdapter().catch(() => null);
  if (!adapter) return { device: "wasm", why: "no WebGPU in this browser" };
  const info = adapter.info || {};
  const gpu = [info.vendor, info.architecture].filter(Boolean).join(" ") || "GPU";
  if (info.isFallbackAdapter && asked !== "webgpu") return { device: "wasm", why: `WebGPU here is a CPU fallback (${gpu})` };
  return { device: "webgpu", gpu };
}

// The files one device runs: the graph, its weights (and the name the graph knows them by).
function modelFiles(manifest, device) {
  if (device === "webgpu") {
    const { folder, runtime_file: graph } = manifest.webgpu;
    return { graph: `${folder}/${graph}`, data: `${folder}/model.onnx.data`, dataName: "model.onnx.data", precision: manifest.webgpu.precision };
  }
  const dataName = `${manifest.model_file}.data`;
  return { graph: manifest.runtime_file || manifest.model_file, data: dataName, dataName, precision: manifest.precision };
}

async function load() {
  state("loading");
  if (!crypto?.subtle) throw new Error("open this page over https or http://localhost (see README): the browser hides crypto.subtle elsewhere");
  const manifest = await (await fetch(new URL("manifest.json", BUNDLE))).json();
  if (manifest.format !== "onnx" || manifest.graph !== "ort" || !manifest.files[modelFiles(manifest, "wasm").graph]) {
    throw new Error(`this bundle is not a mobile export (${manifest.graph}): run qwen-edge export MODEL -o OUT --target mobile`);
  }
  const choice = await chooseDevice(manifest);
  const shared = ["tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"];
  const files = {};
  for (const name of shared) files[name] = await fetchVerified(name, manifest.files[name], () => {});
  const text = (name) => JSON.parse(new TextDecoder().decode(files[name]));
  const config = text("config.json");
  const generation = text("generation_config.json");
  const tokenizerConfig = text("tokenizer_config.json");
  const eos = [].concat(generation.eos_token_id ?? config.eos_token_id ?? []);
  let started;
  try {
    started = await startModel(manifest, choice.device, { ...config, eos_token_id: eos });
  } catch (e) {
    if (choice.device !== "webgpu") throw e;
    // A GPU that refuses the model (memory, a missing shader feature): the CPU path still works.
    console.warn(`WebGPU failed, using WebAssembly: ${e.message || e}`);
    Object.assign(choice, { device: "wasm", why: `WebGPU failed: ${String(e.message || e).split("\n")[0]}` });
    started = await startModel(manifest, "wasm", { ...config, eos_token_id: eos });
  }
  return {
    ...started,
    choice,
    name: modelName(manifest, config),
    context: Math.min(config.max_position_embeddings || CONTEXT_LIMIT, CONTEXT_LIMIT),
    settings: loadSettings(generation),
    tokenizer: new Tokenizer(text("tokenizer.json")),
    template: new Template(tokenizerConfig.chat_template),
    eosToken: typeof tokenizerConfig.eos_token === "string" ? tokenizerConfig.eos_token : tokenizerConfig.eos_token?.content,
  };
}

// Download and verify one device's model files, then start the worker on them.
async function startModel(manifest, device, config) {
  const { graph, data, dataName, precision } = modelFiles(manifest, device);
  const missing = [graph, data].filter((n) => !manifest.files[n]);
  if (missing.length) throw new Error(`the bundle lists no ${missing.join(", ")}: re-export it with qwen-edge export MODEL -o OUT --target mobile`);
  const total = manifest.files[graph].bytes + manifest.files[data].bytes;
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
  const graphBytes = await fetchVerified(graph, manifest.files[graph], progress);
  const dataBytes = await fetchVerified(data, manifest.files[data], progress);
  bar.hidden = true;
  $("status").textContent = "starting the model…";
  const worker = new Worker(new URL("worker.js", import.meta.url), { type: "module" });
  try {
    const ready = await new Promise((resolve, reject) => {
      worker.onmessage = ({ data }) => (data.type === "ready" ? resolve(data) : reject(new Error(data.message)));
      worker.onerror = (e) => reject(new Error(`the model's worker failed to start: ${e.message || "see the console"}`));
      // ?threads=N overrides (a phone's little cores can slow a run down); threads need isolation
      const asked = Number(new URLSearchParams(location.search).get("threads")) || Math.min(4, navigator.hardwareConcurrency || 1);
      const threads = self.crossOriginIsolated ? asked : 1;
      worker.postMessage(
        { type: "load", graph: graphBytes, data: dataBytes, dataName, threads, config, device,
          wasmPaths: new URL("vendor/ort/", location.href).href },
        [graphBytes.buffer, dataBytes.buffer],
      ); // fmt: transferred, not copied: the page keeps no second copy of the weights
    });
    // Prompt lookup on WebAssembly (?lookup=0: off). Not on WebGPU: a refused guess trims the cache,
    // which there means bringing it down from the GPU.
    const lookup = device === "wasm" && new URLSearchParams(location.search).get("lookup") !== "0";
    return { worker, device, threads: ready.threads, precision, megabytes: total / 1e6, lookup };
  } catch (e) {
    worker.terminate();
    throw e;
  }
}

// Where the model runs, in words, for the status line.
function runsOn(model) {
  if (model.device === "webgpu") return `onnxruntime-web (WebGPU: ${model.choice.gpu})`;
  const threads = `${model.threads} thread${model.threads > 1 ? "s" : ""}`;
  return `onnxruntime-web (WebAssembly, ${threads}; ${model.choice.why})`;
}

function bubble(role, text = "") {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("messages").append(div);
  return div;
}

// Follow the reply as it streams, unless the reader scrolled up to read something earlier.
function nearBottom() {
  const m = $("messages");
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToEnd() {
  const m = $("messages");
  m.scrollTop = m.scrollHeight;
}

// What every chat starts with (the template's system turn, when it has one): computed into the
// cache while the user types, so the first answer starts sooner. "" when the template adds nothing.
function systemPrefix(model) {
  const marker = "\u2063\u2063";
  const text = model.template.render({ messages: [{ role: "user", content: marker }], add_generation_prompt: true, eos_token: model.eosToken });
  const cut = text.lastIndexOf("<|im_start|>user", text.indexOf(marker));
  return cut > 0 ? text.slice(0, cut) : "";
}

function warm(model) {
  const prefix = systemPrefix(model);
  if (prefix) model.worker.postMessage({ type: "prefill", ids: model.tokenizer.encode(prefix) });
}

// The conversation as the template renders it, oldest turns dropped until it fits the context.
function promptFor(model, messages, maxNew) {
  let kept = messages;
  for (;;) {
    const ids = model.tokenizer.encode(model.template.render({ messages: kept, add_generation_prompt: true, eos_token: model.eosToken }));
    if (ids.length + maxNew <= model.context) return { ids, dropped: messages.length - kept.length };
    if (kept.length <= 1) {
      throw new Error(`this message needs ${ids.length} tokens plus ${maxNew} for the answer, over the ${model.context} this chat holds: shorten it or lower max tokens`);
    }
    kept = kept.slice(2); // the oldest user turn and its answer
  }
}

async function main() {
  if ("serviceWorker" in navigator && self.isSecureContext) navigator.serviceWorker.register("sw.js").catch(() => {});
  let model;
  try {
    model = await load();
  } catch (e) {
    return fail(String(e.message || e));
  }
  $("model").textContent = `${model.name} · ${model.precision} · ${model.megabytes < 10 ? model.megabytes.toFixed(1) : model.megabytes.toFixed(0)}\u00a0MB`;
  $("status").textContent =
    `ready · ${runsOn(model)}` +
    (notCached.length ? " · not stored for offline use (browser storage refused it)" : "");
  bindSettings(model.settings);
  warm(model);
  $("prompt").disabled = $("send").disabled = $("new-chat").disabled = false;
  state("ready");
  const replies = (window.qwenEdge = { replies: [], device: model.device }).replies; // each reply's numbers, for tests and benchmarks
  let messages = [];
  let busy = false;
  $("stop").onclick = () => model.worker.postMessage({ type: "stop" });
  $("new-chat").onclick = () => {
    if (busy) return;
    messages = [];
    $("messages").replaceChildren();
    $("speed").textContent = "";
    model.worker.postMessage({ type: "reset" });
    warm(model);
    $("prompt").focus();
    state("ready");
  };
  $("composer").onsubmit = async (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || busy) return;
    const settings = model.settings;
    const conversation = [...messages, { role: "user", content: text }];
    let prompt;
    try {
      prompt = promptFor(model, conversation, settings.maxNewTokens);
    } catch (e) {
      $("speed").textContent = e.message;
      return;
    }
    busy = true;
    $("prompt").value = "";
    $("error").hidden = true;
    bubble("user", text);
    const out = bubble("assistant");
    scrollToEnd();
    const streamer = new TextStreamer(model.tokenizer, ["<|im_end|>"]);
    $("send").hidden = true;
    $("stop").hidden = false;
    $("new-chat").disabled = true;
    state("generating");
    let pending = "";
    let frame = 0;
    let count = 0;
    const paints = []; // the token count at each paint: what a reader saw grow
    const flush = () => {
      frame = 0;
      const follow = nearBottom();
      out.textContent += pending;
      pending = "";
      out.dataset.tokens = String(count);
      paints.push(count);
      if (follow) scrollToEnd();
    };
    const end = await new Promise((resolve) => {
      model.worker.onmessage = ({ data }) => {
        if (data.type === "token") {
          count++;
          pending += streamer.put(data.token);
          frame ||= requestAnimationFrame(flush); // one paint per frame, however fast tokens come
        } else if (data.type === "start") {
          $("speed").textContent = `first token ${data.ttft.toFixed(2)} s · ${data.computed} prompt tokens computed, ${data.reused} reused`;
        } else if (data.type === "end" || data.type === "error") {
          resolve(data);
        }
      };
      const { temperature, topP, topK, maxNewTokens } = settings;
      const opts = { temperature, topP, topK, maxNewTokens, seed: Date.now() >>> 0, lookup: model.lookup ? {} : null };
      model.worker.postMessage({ type: "generate", ids: prompt.ids, opts });
    });
    if (frame) cancelAnimationFrame(frame);
    pending += streamer.end();
    flush();
    busy = false;
    $("send").hidden = false;
    $("stop").hidden = true;
    $("new-chat").disabled = false;
    if (end.type === "error") return fail(end.message);
    messages = [...conversation.slice(prompt.dropped), { role: "assistant", content: out.textContent }];
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent =
      `${end.tokens} tokens · ${end.decodeRate.toFixed(1)} tokens/s · first token ${end.ttft.toFixed(2)} s` +
      (end.reused ? ` · ${end.reused} of ${end.reused + end.computed} prompt tokens reused` : "") +
      (end.drafted ? ` · ${end.accepted} of ${end.drafted} looked-up guesses kept` : "") +
      (prompt.dropped ? ` · ${prompt.dropped} oldest messages left out to fit` : "");
    const follow = nearBottom();
    out.after(meta);
    if (follow) scrollToEnd();
    $("speed").textContent = meta.textContent;
    replies.push({ tokens: end.tokens, ttft_s: end.ttft, decode_tok_s: end.decodeRate, reused: end.reused, computed: end.computed,
      drafted: end.drafted, accepted: end.accepted, stopped: end.stopped, paints, prompt_ids: prompt.ids, ids: end.ids }); // fmt: skip
    state(end.stopped ? "stopped" : "done");
  };
}

main();
