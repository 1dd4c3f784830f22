// Sampling rules, UTF-8-safe streaming with stop strings, and (with QWEN_EDGE_GENERATE_CASE from the
// pytest wrapper) greedy generation on onnxruntime-web equal to the Python runtime's tokens.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { Generator, TextStreamer, accepted, probabilities, sample, seeded } from "../src/generate.js";
import { Tokenizer } from "../src/tokenizer.js";

test("greedy, min-p, top-k and penalties follow the Python rules", () => {
  const logits = [Math.log(0.5), Math.log(0.3), Math.log(0.12), Math.log(0.08)];
  assert.equal(sample(logits, { temperature: 0 }, seeded(1)), 0);
  const rng = seeded(3);
  const draws = Array.from({ length: 3000 }, () => sample(logits, { temperature: 1, minP: 0.2 }, rng));
  assert.deepEqual([...new Set(draws)].sort(), [0, 1, 2]); // 0.08 < 0.2 x 0.5 is dropped
  const k = Array.from({ length: 500 }, () => sample(logits, { temperature: 1, topK: 2 }, rng));
  assert.deepEqual([...new Set(k)].sort(), [0, 1]);
  const p = Array.from({ length: 500 }, () => sample(logits, { temperature: 1, topP: 0.4 }, rng));
  assert.deepEqual([...new Set(p)], [0]);
  // repetition penalty 3 on the seen best token: 0.5 -> its logit / 3 ... as Python's penalize
  const rep = sample([2.0, 1.0], { temperature: 0, repetitionPenalty: 3 }, rng, [0]);
  assert.equal(rep, 1);
  const a = Array.from({ length: 20 }, ((r) => () => sample(logits, { temperature: 1 }, r))(seeded(9)));
  const b = Array.from({ length: 20 }, ((r) => () => sample(logits, { temperature: 1 }, r))(seeded(9)));
  assert.deepEqual(a, b);
});

test("samples over a real-size vocabulary (151,936 logits) at temperature > 0", () => {
  const rng = seeded(5);
  const logits = Float32Array.from({ length: 151936 }, () => rng() * 10);
  logits[42] = 60; // far ahead: every setting must pick it
  for (const opts of [{ temperature: 0.7 }, { temperature: 1, minP: 0.05 }, { temperature: 0.8, topP: 0.9, topK: 40 }]) {
    assert.equal(sample(logits, opts, seeded(7)), 42);
  }
  // top-k picks the k largest without sorting the vocabulary; ties with the k-th stay (as in Python)
  const { ids } = probabilities(logits, { temperature: 1, topK: 3 });
  assert.equal(ids.length, 3);
  assert.ok(ids.includes(42));
  const tied = Float32Array.from([1, 5, 3, 5, 2, 5]);
  assert.deepEqual(probabilities(tied, { temperature: 1, topK: 2 }).ids, [1, 3, 5]);
  const flat = new Float32Array(151936); // all equal: a draw lands anywhere in range
  const i = sample(flat, { temperature: 1 }, seeded(8));
  assert.ok(Number.isInteger(i) && i >= 0 && i < 151936);
});

// A byte-level toy tokenizer: token id = byte value, so every multibyte character is split.
const bytesTok = { bytes: (ids) => Uint8Array.from(ids) };

test("streams whole characters only, and never any part of a stop string", () => {
  const text = "añb快😀c END tail";
  const ids = [...new TextEncoder().encode(text)];
  const s = new TextStreamer(bytesTok, ["END"]);
  const pieces = ids.map((t) => s.put(t)).concat([s.end()]).filter(Boolean);
  assert.equal(pieces.join(""), "añb快😀c ");
  assert.ok(pieces.every((p) => !p.includes("\ufffd")));
  assert.ok(s.stopped);
  const plain = new TextStreamer(bytesTok);
  assert.equal(ids.map((t) => plain.put(t)).join("") + plain.end(), text);
});

test("a guess kept with probability p(d), else a draw from p without d, is a draw from p", () => {
  // the prompt-lookup rule (generate's accepted + sample with `refused`), by Monte Carlo
  const logits = Float32Array.from([2.0, 1.0, 0.5, 0.0, -1.0]);
  const opts = { temperature: 0.8, topP: 1 };
  const { ids, p } = probabilities(logits, opts);
  const rng = seeded(7);
  for (const guess of [0, 2, 4]) {
    const counts = new Array(logits.length).fill(0);
    const n = 40000;
    for (let i = 0; i < n; i++) {
      const token = accepted(logits, guess, opts, rng) ? guess : sample(logits, opts, rng, [], [], guess);
      counts[token]++;
    }
    ids.forEach((id, j) => assert.ok(Math.abs(counts[id] / n - p[j]) < 0.01, `guess ${guess}, token ${id}: ${counts[id] / n} vs ${p[j]}`));
  }
});

const spec = process.env.QWEN_EDGE_GENERATE_CASE;

test("greedy tokens on onnxruntime-web equal the Python runtime's", { skip: !spec && "no case given" }, async () => {
  const { folder, prompt, expected, config } = JSON.parse(readFileSync(spec, "utf8"));
  const ort = await import("onnxruntime-web");
  ort.env.wasm.numThreads = 1;
  const model = readFileSync(`${folder}/model_last_logits.onnx`);
  const data = readFileSync(`${folder}/model.onnx.data`);
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ["wasm"],
    externalData: [{ path: "model.onnx.data", data }],
  });
  const tok = new Tokenizer(JSON.parse(readFileSync(`${folder}/tokenizer.json`, "utf8")));
  const ids = tok.encode(prompt);
  const gen = new Generator(ort, session, config);
  const run = async (g, prompt, n) => {
    const out = [];
    for await (const t of g.generate(prompt, { maxNewTokens: n, ignoreEos: true })) out.push(t);
    return out;
  };
  const out = await run(gen, ids, expected.length);
  assert.deepEqual(out, expected);

  // Prompt lookup: guesses checked several per run, the refused ones trimmed from the cache; the
  // greedy tokens stay the plain ones.
  const looked = new Generator(ort, session, config);
  const guessed = [];
  for await (const t of looked.generate(ids, { maxNewTokens: expected.length, ignoreEos: true, lookup: {} })) guessed.push(t);
  assert.deepEqual(guessed, expected);
  assert.ok(looked.stats.drafted > 0 && looked.stats.accepted <= looked.stats.drafted, JSON.stringify(looked.stats));

  // A second turn computes only what the cache lacks (all but the last sampled token is cached)
  // and gives what a fresh generator gives on the whole prompt; so does a prompt that diverges.
  const next = [...ids, ...out, 7, 11, 13];
  const again = await run(gen, next, 6);
  assert.deepEqual(gen.stats, { reused: ids.length + out.length - 1, computed: 4 });
  assert.deepEqual(again, await run(new Generator(ort, session, config), next, 6));
  const diverged = [...ids, 3, 5];
  const third = await run(gen, diverged, 6);
  assert.deepEqual(gen.stats, { reused: ids.length, computed: 2 });
  assert.deepEqual(third, await run(new Generator(ort, session, config), diverged, 6));
  const repeated = await run(gen, diverged, 6); // the whole prompt cached: its last token is run again
  assert.deepEqual(gen.stats, { reused: diverged.length - 1, computed: 1 });
  assert.deepEqual(repeated, third);
  // a prefix computed ahead (the app's system prompt) is reused by the prompt that starts with it
  const warm = new Generator(ort, session, config);
  await warm.prefill(ids.slice(0, 3));
  assert.deepEqual(warm.cached, ids.slice(0, 3));
  assert.deepEqual(await run(warm, ids, expected.length), expected);
  assert.deepEqual(warm.stats, { reused: 3, computed: ids.length - 3 });
});

test("the distribution sampled from equals the Python runtime's", { skip: !spec && "no case given" }, () => {
  const { sampling } = JSON.parse(readFileSync(spec, "utf8"));
  assert.ok(sampling.length >= 5);
  for (const { logits, opts, seen, output, expected } of sampling) {
    const { ids, p } = probabilities(Float32Array.from(logits), opts, seen, output);
    const dense = new Float64Array(logits.length);
    ids.forEach((id, j) => (dense[id] = p[j]));
    const worst = dense.reduce((m, v, i) => Math.max(m, Math.abs(v - expected[i])), 0);
    assert.ok(worst < 1e-6, `${JSON.stringify(opts)}: differs by ${worst}`);
  }
});
