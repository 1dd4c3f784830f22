// The model runs here, off the page's thread: the page stays responsive (scrolling, the stop button)
// while a token is computed, and the KV cache never crosses threads. Messages in: load, prefill,
// generate, reset (run one after another, in order), stop (at once). Messages out: ready, prefilled,
// start, token, end, error.
import { Generator } from "./generate.js";

let generator = null;
let controller = null;

// A task boundary, so a "stop" message is handled between two tokens (setTimeout(0) would clamp to
// 4 ms once nested).
const channel = new MessageChannel();
const nextTask = () =>
  new Promise((resolve) => {
    channel.port1.onmessage = resolve;
    channel.port2.postMessage(0);
  });

// onnxruntime-web ships one build per backend: the WASM build for the INT8 model (its CPU kernels
// include MatMulInteger and GatherBlockQuantized), the WebGPU build for the INT4 one.
const WEBGPU_CHUNK = 16; // prompt tokens per run on WebGPU (see Generator: its attention is wrong from 32)
const BUILDS = { wasm: "../vendor/ort/ort.wasm.min.mjs", webgpu: "../vendor/ort/ort.webgpu.min.mjs" };

async function load({ graph, data, dataName, config, threads, wasmPaths, device }) {
  const ort = await import(BUILDS[device]);
  ort.env.logLevel = "error"; // its warnings (e.g. "some nodes were not assigned to WebGPU") would read as failures
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = wasmPaths;
  const options = { executionProviders: [device], externalData: [{ path: dataName, data }], logSeverityLevel: 3 };
  if (device === "webgpu") options.preferredOutputLocation = "gpu-buffer"; // the KV cache stays on the GPU
  const session = await ort.InferenceSession.create(graph, options);
  generator = new Generator(ort, session, config, { chunk: device === "webgpu" ? WEBGPU_CHUNK : Infinity });
  postMessage({ type: "ready", device, threads: ort.env.wasm.numThreads });
}

async function generate({ ids, opts }) {
  controller = new AbortController();
  const start = performance.now();
  let first = 0;
  let count = 0;
  const made = [];
  try {
    const tokens = generator.generate(ids, { ...opts, signal: controller.signal });
    for await (const token of tokens) {
      if (!count) {
        first = performance.now();
        postMessage({ type: "start", ...generator.stats, ttft: (first - start) / 1000 });
      }
      count++;
      made.push(token);
      postMessage({ type: "token", token });
      await nextTask();
    }
    const seconds = (performance.now() - first) / 1000;
    postMessage({
      type: "end",
      stopped: controller.signal.aborted,
      tokens: count,
      ids: made,
      ttft: count ? (first - start) / 1000 : (performance.now() - start) / 1000,
      decodeRate: count > 1 ? (count - 1) / seconds : 0,
      ...generator.stats,
    });
  } catch (e) {
    postMessage({ type: "error", message: String(e.message || e) });
  } finally {
    controller = null;
  }
}

async function prefill({ ids }) {
  const start = performance.now();
  await generator.prefill(ids);
  postMessage({ type: "prefilled", tokens: ids.length, seconds: (performance.now() - start) / 1000 });
}

async function reset() {
  generator?.reset();
}

let queue = Promise.resolve(); // one session: its runs must not overlap
onmessage = ({ data }) => {
  if (data.type === "stop") return controller?.abort();
  const run = { load, prefill, generate, reset }[data.type];
  if (!run) return;
  queue = queue.then(() => run(data)).catch((e) => postMessage({ type: "error", message: String(e.message || e) }));
};
