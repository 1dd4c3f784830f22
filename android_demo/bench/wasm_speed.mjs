// Decode speed of a bundle on onnxruntime-web's WASM build under Node (the browser's kernels,
// without the browser): prefill of random ids, then greedy one-token steps.
//   node bench/wasm_speed.mjs FOLDER [--threads 1] [--prompt 32] [--new 16] [--runs 3]
// Prints one JSON line per run and a median line: {prefill_s, decode_tok_s}.
import { readFileSync } from "node:fs";

import { Generator } from "../src/generate.js";

const args = process.argv.slice(2);
const folder = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const threads = opt("threads", 1);
const promptLen = opt("prompt", 32);
const newTokens = opt("new", 16);
const runs = opt("runs", 3);

const ort = await import("onnxruntime-web");
ort.env.wasm.numThreads = threads;
const manifest = JSON.parse(readFileSync(`${folder}/manifest.json`, "utf8"));
const graph = manifest.runtime_file ?? manifest.model_file;
const session = await ort.InferenceSession.create(readFileSync(`${folder}/${graph}`), {
  executionProviders: ["wasm"],
  externalData: [{ path: `${manifest.model_file}.data`, data: readFileSync(`${folder}/${manifest.model_file}.data`) }],
});
const config = JSON.parse(readFileSync(`${folder}/config.json`, "utf8"));
const gen = new Generator(ort, session, config);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = [];
for (let r = 0; r < runs + 1; r++) {
  const ids = Array.from({ length: promptLen }, (_, i) => 1000 + ((i * 7919 + r * 104729) % 90000));
  const start = performance.now();
  const stamps = [];
  for await (const _ of gen.generate(ids, { maxNewTokens: newTokens, ignoreEos: true })) stamps.push(performance.now());
  const row = { prefill_s: (stamps[0] - start) / 1000, decode_tok_s: (stamps.length - 1) / ((stamps.at(-1) - stamps[0]) / 1000) };
  if (r > 0) {
    results.push(row); // run 0 is the warm-up
    console.log(JSON.stringify({ run: r, threads, ...row }));
  }
}
console.log(JSON.stringify({ median: true, threads, prefill_s: median(results.map((x) => x.prefill_s)), decode_tok_s: median(results.map((x) => x.decode_tok_s)) }));
