// The model runs here, off the page's thread: the page stays responsive (scrolling, the stop button)
// while a token is computed, and the KV cache never crosses threads. Messages in: load, generate,
// stop, reset. Messages out: ready, start, token, end, error.
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

onmessage = ({ data }) => {
  const run = { load, generate }[data.type];
  if (run) run(data).catch((e) => postMessage({ type: "error", message: String(e.message || e) }));
  else if (data.type === "stop") controller?.abort();
  else if (data.type === "reset") generator?.reset();
};
