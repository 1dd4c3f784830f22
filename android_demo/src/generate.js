// Generation on onnxruntime-web with the same rules as the Python runtime (qwen_edge/runtime):
// penalties, then temperature, top-k, min-p, top-p; greedy at temperature 0; stop on EOS ids, stop
// strings and max tokens; text streamed in whole UTF-8 characters; cancellable between tokens.
// The model is the exported `ort` graph (model_last_logits.onnx): each call's present KV becomes
// the next call's past.

export function sample(logits, opts, rng, seen = [], output = []) {
  const z = Float64Array.from(logits);
  if (opts.repetitionPenalty && opts.repetitionPenalty !== 1) {
    for (const id of new Set(seen)) z[id] = z[id] > 0 ? z[id] / opts.repetitionPenalty : z[id] * opts.repetitionPenalty;
  }
  if (opts.presencePenalty) for (const id of new Set(output)) z[id] -= opts.presencePenalty;
  const temperature = opts.temperature ?? 0;
  if (temperature <= 0) return argmax(z);
  for (let i = 0; i < z.length; i++) z[i] /= temperature;
  const topK = opts.topK ?? 0;
  if (topK > 0 && topK < z.length) {
    const kth = Float64Array.from(z).sort()[z.length - topK];
    for (let i = 0; i < z.length; i++) if (z[i] < kth) z[i] = -Infinity;
  }
  const max = maxOf(z);
  let p = z.map((v) => Math.exp(v - max));
  normalize(p);
  if (opts.minP > 0) {
    const cut = opts.minP * maxOf(p);
    p = p.map((v) => (v < cut ? 0 : v));
    normalize(p);
  }
  const topP = opts.topP ?? 1;
  if (topP < 1) {
    const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a]);
    let mass = 0;
    for (const i of order) {
      if (mass >= topP) p[i] = 0; // the smallest set whose mass reaches top_p is kept
      mass += p[i] > 0 ? p[i] : 0;
    }
    normalize(p);
  }
  let r = rng();
  for (let i = 0; i < p.length; i++) {
    r -= p[i];
    if (r < 0) return i;
  }
  return argmax(p);
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

// Token ids in, text pieces out: whole characters only, never any part of a stop string.
export class TextStreamer {
  constructor(tokenizer, stop = []) {
    this.tokenizer = tokenizer;
    this.stop = stop.filter(Boolean);
    this.tokens = [];
    this.text = "";
    this.sent = 0;
    this.stopped = false;
    this.decoder = new TextDecoder("utf-8", { fatal: false });
  }

  put(token) {
    if (this.stopped) return "";
    this.tokens.push(token);
    const bytes = this.tokenizer.bytes(this.tokens);
    const complete = completeLength(bytes);
    this.text = this.decoder.decode(bytes.subarray(0, complete));
    return this.release(false);
  }

  end() {
    if (this.stopped) return "";
    this.text = this.decoder.decode(this.tokenizer.bytes(this.tokens));
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

// Bytes up to the last complete UTF-8 character.
function completeLength(bytes) {
  const n = bytes.length;
  let i = n - 1;
  let continuation = 0;
  while (i >= 0 && continuation < 3 && (bytes[i] & 0xc0) === 0x80) {
    i--;
    continuation++;
  }
  if (i < 0) return n; // stray continuation bytes: the decoder replaces them
  const lead = bytes[i];
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return continuation + 1 >= need ? n : i;
}

// The exported folder on onnxruntime-web: prefill then one token at a time.
export class Generator {
  constructor(ort, session, config) {
    this.ort = ort;
    this.session = session;
    this.pastNames = session.inputNames.filter((n) => n.startsWith("past_key_values."));
    this.kvHeads = config.num_key_value_heads;
    this.headDim = config.head_dim ?? config.hidden_size / config.num_attention_heads;
    this.eos = new Set([].concat(config.eos_token_id ?? []));
    this.kvType = "float32";
  }

  async *generate(promptIds, opts = {}) {
    const { ort } = this;
    const maxNew = opts.maxNewTokens ?? 64;
    const rng = seeded(opts.seed ?? 0);
    const eos = new Set([...this.eos, ...(opts.eosIds ?? [])]);
    let past = Object.fromEntries(
      this.pastNames.map((n) => [n, new ort.Tensor(this.kvType, new Float32Array(0), [1, this.kvHeads, 0, this.headDim])]),
    );
    let feedIds = promptIds;
    let length = 0;
    const output = [];
    for (let i = 0; i < maxNew; i++) {
      if (opts.signal?.aborted) return;
      const ids = new ort.Tensor("int64", BigInt64Array.from(feedIds, BigInt), [1, feedIds.length]);
      length += feedIds.length;
      const mask = new ort.Tensor("int64", new BigInt64Array(length).fill(1n), [1, length]);
      const out = await this.session.run({ input_ids: ids, attention_mask: mask, ...past });
      const logits = out.logits;
      const vocab = logits.dims[2];
      const last = logits.data.subarray((logits.dims[1] - 1) * vocab, logits.dims[1] * vocab);
      const token = sample(last, opts, rng, [...promptIds, ...output], output);
      past = Object.fromEntries(this.pastNames.map((n) => [n, out[n.replace("past_key_values", "present")]]));
      if (eos.has(token) && !opts.ignoreEos) return;
      output.push(token);
      yield token;
      feedIds = [token];
    }
  }
}
