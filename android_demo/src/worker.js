// The model runs here, off the page's thread: the page stays responsive (scrolling, the stop button)
// while a token is computed, and the KV cache never crosses threads. Messages in: load, prefill,
// generate, reset (run one after another, in order), stop (at once). Messages out: ready, prefilled,
// start, token, end, error.
import * as ort from "../vendor/ort/ort.wasm.min.mjs";

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

async function load({ graph, data, dataName, config, threads, wasmPaths }) {
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = wasmPaths;
  const session = await ort.InferenceSession.create(graph, {
    executionProviders: ["wasm"],
    externalData: [{ path: dataName, data }],
  });
  generator = new Generator(ort, session, config);
  postMessage({ type: "ready", threads: ort.env.wasm.numThreads });
}

async function generate({ ids, opts }) {
  controller = new AbortController();
  const start = performance.now();
  let first = 0;
  let count = 0;
  try {
    const tokens = generator.generate(ids, { ...opts, signal: controller.signal });
    for await (const token of tokens) {
      if (!count) {
        first = performance.now();
        postMessage({ type: "start", ...generator.stats, ttft: (first - start) / 1000 });
      }
      count++;
      postMessage({ type: "token", token });
      await nextTask();
    }
    const seconds = (performance.now() - first) / 1000;
    postMessage({
      type: "end",
      stopped: controller.signal.aborted,
      tokens: count,
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
