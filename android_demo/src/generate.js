// Generation on onnxruntime-web with the same rules as the Python runtime (qwen_edge/runtime):
// penalties, then temperature, top-k, min-p, top-p; greedy at temperature 0; stop on EOS ids, stop
// strings and max tokens; text streamed in whole UTF-8 characters; cancellable between tokens.
// The model is the exported `ort` graph (model_last_logits.onnx): each call's present KV becomes
// the next call's past.

// Prompt lookup's settings (the Python runtime's PromptLookup, but tails of 3 to 2 tokens: in
// WebAssembly a checked guess is not free — a run of 2 tokens costs ~1.3 of 1 — and one-token
// matches guessed wrong too often; benchmarks/RESULTS.md), 2 guesses to start, at most 8.
export const LOOKUP = { maxNgram: 3, minNgram: 2, startDraft: 2, maxDraft: 8 };

// Up to k tokens that followed the latest earlier occurrence of the longest matching tail of `tokens`.
export function propose(tokens, k, maxNgram = LOOKUP.maxNgram, minNgram = 1) {
  const n = tokens.length;
  for (let size = Math.min(maxNgram, n - 1); size >= minNgram; size--) {
    for (let start = n - size - 1; start >= 0; start--) {
      let match = true;
      for (let i = 0; i < size && match; i++) match = tokens[start + i] === tokens[n - size + i];
      if (match && start + size < n) return tokens.slice(start + size, start + size + k);
    }
  }
  return [];
}

// Whether a guess stands: the argmax (greedy), or kept with its probability (sampling).
export function accepted(logits, guess, opts, rng, seen = [], output = []) {
  if (!((opts.temperature ?? 0) > 0)) return argmax(penalized(logits, opts, seen, output)) === guess;
  const { ids, p } = probabilities(logits, opts, seen, output);
  const j = ids.indexOf(guess);
  return rng() < (j < 0 ? 0 : p[j]);
}

// The next token: greedy at temperature 0, else drawn; never `refused` (a guess just refused at this
// position: what is left of p once it is taken out, renormalized).
export function sample(logits, opts, rng, seen = [], output = [], refused = -1) {
  if (!((opts.temperature ?? 0) > 0)) return argmax(penalized(logits, opts, seen, output));
  let { ids, p } = probabilities(logits, opts, seen, output);
  if (ids.includes(refused) && ids.length > 1) [ids, p] = keep(ids, p, (_, j) => ids[j] !== refused);
  let r = rng();
  for (let j = 0; j < p.length; j++) {
    r -= p[j];
    if (r < 0) return ids[j];
  }
  return ids[argmax(p)];
}

function penalized(logits, opts, seen, output) {
  const z = Float64Array.from(logits);
  if (opts.repetitionPenalty && opts.repetitionPenalty !== 1) {
    for (const id of new Set(seen)) z[id] = z[id] > 0 ? z[id] / opts.repetitionPenalty : z[id] * opts.repetitionPenalty;
  }
  if (opts.presencePenalty) for (const id of new Set(output)) z[id] -= opts.presencePenalty;
  return z;
}

// The distribution a token is drawn from (temperature > 0), as the ids with a probability above 0
// and those probabilities: the Python runtime's `probabilities`, rule for rule. Only candidates are
// handled after top-k (a phone cannot afford sorting 151,936 logits per token).
export function probabilities(logits, opts, seen = [], output = []) {
  const z = penalized(logits, opts, seen, output);
  const temperature = opts.temperature;
  const topK = opts.topK ?? 0;
  let ids;
  if (topK > 0 && topK < z.length) {
    const kth = z[largest(z, topK).at(-1)];
    ids = [];
    for (let i = 0; i < z.length; i++) if (z[i] >= kth) ids.push(i); // ties with the k-th stay, as in Python
  } else {
    ids = Array.from(z.keys());
  }
  const max = maxOf(ids.map((i) => z[i]));
  let p = ids.map((i) => Math.exp((z[i] - max) / temperature));
  normalize(p);
  if (opts.minP > 0) {
    const cut = opts.minP * maxOf(p);
    [ids, p] = keep(ids, p, (v) => v >= cut);
  }
  const topP = opts.topP ?? 1;
  if (topP < 1) {
    [ids, p] = keep(ids, p, (v) => v > 0);
    const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a]);
    let mass = 0;
    const kept = new Set();
    for (const j of order) {
      if (mass >= topP) break; // the smallest set whose mass reaches top_p is kept
      kept.add(j);
      mass += p[j];
    }
    [ids, p] = keep(ids, p, (_, j) => kept.has(j));
  }
  return { ids, p };
}

// The k largest entries' indices (a small sorted buffer: O(n) for the k of a chat, 20 to 100).
function largest(values, k) {
  const top = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (top.length === k && v <= values[top[k - 1]]) continue;
    let at = top.length === k ? k - 1 : top.length;
    while (at > 0 && values[top[at - 1]] < v) at--;
    top.splice(at, 0, i);
    if (top.length > k) top.pop();
  }
  return top;
}

// The candidates (and their probabilities, renormalized) for which `test(p, j)` holds.
function keep(ids, p, test) {
  const j = Array.from(p.keys()).filter((i) => test(p[i], i));
  const q = j.map((i) => p[i]);
  normalize(q);
  return [j.map((i) => ids[i]), q];
}

// A loop, never Math.max(...values): spreading a 151,936-entry vocabulary overflows V8's stack.
function maxOf(values) {
  let max = -Infinity;
  for (const v of values) if (Number.isFinite(v) && v > max) max = v;
  return max;
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

function normalize(p) {
  let sum = 0;
  for (const v of p) sum += v;
  for (let i = 0; i < p.length; i++) p[i] /= sum;
}

// A seeded generator (mulberry32): the same seed gives the same text in this app.
export function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Token ids in, text pieces out: whole characters only, never any part of a stop string. Each
// token's bytes go through a streaming UTF-8 decoder (it holds back an unfinished character), so a
// token costs the same at the 1000th as at the first.
export class TextStreamer {
  constructor(tokenizer, stop = []) {
    this.tokenizer = tokenizer;
    this.stop = stop.filter(Boolean);
    this.text = "";
    this.sent = 0;
    this.stopped = false;
    this.decoder = new TextDecoder("utf-8", { fatal: false });
  }

  put(token) {
    if (this.stopped) return "";
    this.text += this.decoder.decode(this.tokenizer.bytes([token]), { stream: true });
    return this.release(false);
  }

  end() {
    if (this.stopped) return "";
    this.text += this.decoder.decode();
    return this.release(true);
  }

  release(final) {
    for (const stop of this.stop) {
      const at = this.text.indexOf(stop, Math.max(0, this.sent - stop.length + 1));
      if (at !== -1) {
        this.text = this.text.slice(0, at);
        this.stopped = true;
      }
    }
    let keep = this.text.length;
    if (!final && !this.stopped) {
      for (const stop of this.stop) {
        for (let n = Math.min(stop.length - 1, this.text.length); n > 0; n--) {
          if (this.text.endsWith(stop.slice(0, n))) {
            keep = Math.min(keep, this.text.length - n);
            break;
          }
        }
      }
    }
    const piece = this.text.slice(this.sent, Math.max(this.sent, keep));
    this.sent = Math.max(this.sent, keep);
    return piece;
  }
}

// The exported folder on onnxruntime-web: prefill then one token at a time. The KV cache stays
// between calls (as the Python runtime's session does): a call computes only the part of its
// prompt the cache does not hold yet, so a chat's second turn does not re-run the first. On WebGPU
// the session is made with its outputs left on the GPU: the cache never leaves it, and a step
// downloads only the logits.
export class Generator {
  // `chunk`: the most tokens one run may feed (a longer prompt goes in pieces, each after the cache
  // of the ones before). onnxruntime-web 1.30's WebGPU GroupQueryAttention computes wrong outputs
  // for 32 or more new tokens in one run (measured on SwiftShader; onnxruntime issue #26064 reports
  // its flash-attention path wrong on real GPUs too), so the WebGPU path feeds at most 16.
  constructor(ort, session, config, { chunk = Infinity } = {}) {
    this.ort = ort;
    this.session = session;
    this.chunk = chunk;
    this.pastNames = session.inputNames.filter((n) => n.startsWith("past_key_values."));
    this.tail = session.inputNames.includes("num_logits"); // how many last positions to project (1 here)
    this.kvHeads = config.num_key_value_heads;
    this.headDim = config.head_dim ?? config.hidden_size / config.num_attention_heads;
    this.eos = new Set([].concat(config.eos_token_id ?? []));
    this.past = null;
    this.reset();
  }

  // Forget the cache: the next call computes its whole prompt.
  reset() {
    release(this.past);
    this.cached = []; // the token ids whose keys and values the cache holds, in order
    this.past = null;
    this.stats = { reused: 0, computed: 0 };
  }

  // Keep the first n cached positions (a view would keep the old buffers alive: copy; a cache on
  // the GPU comes down once, which only a chat that changed an earlier turn pays).
  async trim(n) {
    if (n >= this.cached.length) return;
    if (n === 0 || !this.past) return this.reset();
    const { ort, kvHeads, headDim } = this;
    const length = this.cached.length;
    for (const [name, tensor] of Object.entries(this.past)) {
      const data = await tensor.getData();
      const kept = new Float32Array(kvHeads * n * headDim);
      for (let h = 0; h < kvHeads; h++) {
        kept.set(data.subarray(h * length * headDim, (h * length + n) * headDim), h * n * headDim);
      }
      release([tensor]);
      this.past[name] = new ort.Tensor("float32", kept, [1, kvHeads, n, headDim]);
    }
    this.cached.length = n;
  }

  // Reuse the longest cached prefix of `ids` (all but its last token at most); the ids left to run.
  async reuse(ids, keepLast = true) {
    let common = 0;
    while (common < this.cached.length && common < ids.length && this.cached[common] === ids[common]) common++;
    await this.trim(keepLast ? Math.min(common, ids.length - 1) : common);
    this.stats = { reused: this.cached.length, computed: ids.length - this.cached.length };
    return ids.slice(this.cached.length);
  }

  // Compute `ids` into the cache ahead of time (a chat's fixed system prompt, while the user types);
  // the cache then holds exactly `ids`.
  async prefill(ids) {
    const rest = await this.reuse(ids, false);
    if (rest.length) await this.step(rest);
  }

  // Run `feedIds` after the cached positions: the logits of the last one.
  async step(feedIds) {
    let rows;
    for (let i = 0; i < feedIds.length; i += this.chunk) rows = await this.run(feedIds.slice(i, i + this.chunk));
    return rows.at(-1);
  }

  // One session run: the logits of the last `rows` positions fed, one array each.
  async run(feedIds, rows = 1) {
    const { ort } = this;
    const past = this.past ?? this.emptyPast();
    const length = this.cached.length + feedIds.length;
    const ids = new ort.Tensor("int64", BigInt64Array.from(feedIds, BigInt), [1, feedIds.length]);
    const mask = new ort.Tensor("int64", new BigInt64Array(length).fill(1n), [1, length]);
    let out;
    try {
      const wanted = this.tail ? { num_logits: new ort.Tensor("int64", BigInt64Array.of(BigInt(rows)), [1]) } : {};
      out = await this.session.run({ input_ids: ids, attention_mask: mask, ...wanted, ...past });
    } catch (e) {
      this.reset(); // the cache may be half-updated: start clean next time
      throw e;
    }
    release(this.past);
    this.past = Object.fromEntries(this.pastNames.map((n) => [n, out[n.replace("past_key_values", "present")]]));
    this.cached.push(...feedIds);
    const vocab = out.logits.dims[2];
    const logits = await out.logits.getData(true); // on the GPU: downloaded, then its buffer freed
    const n = out.logits.dims[1]; // rows, or every position fed on a graph without num_logits
    return Array.from({ length: rows }, (_, i) => logits.subarray((n - rows + i) * vocab, (n - rows + i + 1) * vocab));
  }

  // Tokens one at a time; with `opts.lookup` (prompt lookup, on a graph with num_logits) each step
  // also checks up to k guesses copied from where the last tokens occurred earlier in the prompt or
  // the output, all in one run: a code edit repeats much of its prompt. Greedy gives exactly the
  // plain text; sampling keeps its distribution (a guess d is kept with probability p(d), and at
  // the first refusal the token is drawn from p without d): the Python runtime's rule.
  async *generate(promptIds, opts = {}) {
    const maxNew = opts.maxNewTokens ?? 64;
    const rng = seeded(opts.seed ?? 0);
    const eos = new Set([...this.eos, ...(opts.eosIds ?? [])]);
    const lookup = this.tail && opts.lookup ? { ...LOOKUP, ...opts.lookup } : null;
    const output = [];
    const seen = () => [...promptIds, ...output];
    let logits = await this.step(await this.reuse(promptIds)); // the last prompt token is always run
    let refused = -1;
    let k = lookup?.startDraft ?? 0;
    if (lookup) Object.assign(this.stats, { drafted: 0, accepted: 0 });
    while (output.length < maxNew) {
      if (opts.signal?.aborted) return;
      const token = sample(logits, opts, rng, seen(), output, refused);
      if (eos.has(token) && !opts.ignoreEos) return;
      output.push(token);
      yield token;
      const room = maxNew - output.length;
      if (room <= 0) return;
      const draft = lookup ? propose(seen(), Math.min(k, room), lookup.maxNgram, lookup.minNgram) : [];
      const base = this.cached.length;
      const rows = await this.run([token, ...draft], draft.length + 1);
      let kept = 0;
      refused = -1;
      for (; kept < draft.length; kept++) {
        if (!accepted(rows[kept], draft[kept], opts, rng, seen(), output)) break;
        if (eos.has(draft[kept]) && !opts.ignoreEos) return;
        output.push(draft[kept]);
        yield draft[kept];
        if (output.length >= maxNew) return;
      }
      if (kept < draft.length) {
        refused = draft[kept];
        await this.trim(base + 1 + kept); // forget the refused guess and the ones after it
      }
      logits = rows[kept];
      if (!draft.length) continue;
      this.stats.drafted += draft.length;
      this.stats.accepted += kept;
      k = kept === draft.length ? Math.min(lookup.maxDraft, k + 2) : Math.max(1, kept + 1);
    }
  }

  emptyPast() {
    const shape = [1, this.kvHeads, 0, this.headDim];
    return Object.fromEntries(this.pastNames.map((n) => [n, new this.ort.Tensor("float32", new Float32Array(0), shape)]));
  }
}

// Free the GPU buffers of a set of tensors (CPU tensors need nothing: the garbage collector has them).
function release(tensors) {
  for (const t of Object.values(tensors ?? {})) if (t.location === "gpu-buffer") t.dispose();
}
