// Byte-level BPE from a Hugging Face tokenizer.json (the Qwen2 family's), with no dependencies:
// added tokens split out first, NFC, the Split regex, GPT-2's byte-to-unicode map, ranked merges.
// Decoding maps the byte characters back to bytes and decodes UTF-8. Tested against the Python
// tokenizer on WikiText and mixed-script text (test/tokenizer.test.mjs).

function bytesToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const encoder = new Map();
  bs.forEach((b, i) => encoder.set(b, String.fromCodePoint(cs[i])));
  return encoder;
}

// JavaScript (before V8's regexp modifiers) has no inline (?i:...) groups: spell the letters out.
function portableRegex(pattern) {
  const fixed = pattern.replace(/\(\?i:([^)]*)\)/g, (_, body) =>
    "(?:" + body.replace(/[a-zA-Z]/g, (c) => `[${c.toLowerCase()}${c.toUpperCase()}]`) + ")",
  );
  return new RegExp(fixed, "gu");
}

function splitPattern(preTokenizer) {
  const parts = preTokenizer?.type === "Sequence" ? preTokenizer.pretokenizers : [preTokenizer];
  const split = parts.find((p) => p && p.type === "Split");
  if (!split) throw new Error("tokenizer.json: expected a Split pre-tokenizer (the Qwen2 byte-level BPE)");
  return portableRegex(split.pattern.Regex ?? split.pattern.String);
}

export class Tokenizer {
  constructor(json) {
    const model = json.model;
    if (model?.type !== "BPE") throw new Error(`tokenizer.json: model ${model?.type} is not BPE`);
    this.vocab = new Map(Object.entries(model.vocab));
    this.idToToken = [];
    for (const [token, id] of this.vocab) this.idToToken[id] = token;
    this.ranks = new Map();
    model.merges.forEach((m, i) => this.ranks.set(Array.isArray(m) ? m.join(" ") : m, i));
    this.added = (json.added_tokens || []).slice().sort((a, b) => b.content.length - a.content.length);
    this.special = new Set(this.added.filter((t) => t.special).map((t) => t.id));
    for (const t of this.added) this.idToToken[t.id] = t.content;
    this.addedByContent = new Map(this.added.map((t) => [t.content, t.id]));
    this.pattern = splitPattern(json.pre_tokenizer);
    this.normalize = json.normalizer?.type === "NFC" ? (s) => s.normalize("NFC") : (s) => s;
    this.byteEncoder = bytesToUnicode();
    this.byteDecoder = new Map([...this.byteEncoder].map(([b, c]) => [c, b]));
    this.cache = new Map();
    this.utf8 = new TextEncoder();
  }

  static async fromUrl(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`tokenizer.json: HTTP ${response.status} from ${url}`);
    return new Tokenizer(await response.json());
  }

  encode(text) {
    const ids = [];
    for (const [piece, addedId] of this.splitAdded(text)) {
      if (addedId !== undefined) {
        ids.push(addedId);
        continue;
      }
      for (const word of this.normalize(piece).match(this.pattern) || []) {
        const chars = Array.from(this.utf8.encode(word), (b) => this.byteEncoder.get(b)).join("");
        for (const token of this.bpe(chars)) ids.push(this.vocab.get(token));
      }
    }
    return ids;
  }

  // [text, undefined] runs between added tokens, and [content, id] for each added token found.
  splitAdded(text) {
    const out = [];
    let start = 0;
    let i = 0;
    while (i < text.length) {
      const hit = this.added.find((t) => text.startsWith(t.content, i));
      if (hit) {
        if (i > start) out.push([text.slice(start, i), undefined]);
        out.push([hit.content, hit.id]);
        i += hit.content.length;
        start = i;
      } else {
        i++;
      }
    }
    if (start < text.length) out.push([text.slice(start), undefined]);
    return out;
  }

  bpe(word) {
    const cached = this.cache.get(word);
    if (cached) return cached;
    let parts = Array.from(word);
    while (parts.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < parts.length - 1; i++) {
        const rank = this.ranks.get(parts[i] + " " + parts[i + 1]);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          best = i;
        }
      }
      if (best < 0) break;
      const pair = parts[best] + parts[best + 1];
      const merged = [];
      for (let i = 0; i < parts.length; i++) {
        // merge every occurrence of the best pair, left to right, as the reference BPE does
        if (i < parts.length - 1 && parts[i] + " " + parts[i + 1] === parts[best] + " " + parts[best + 1]) {
          merged.push(pair);
          i++;
        } else {
          merged.push(parts[i]);
        }
      }
      parts = merged;
    }
    if (this.cache.size < 100000) this.cache.set(word, parts);
    return parts;
  }

  // Bytes of the given ids (special tokens skipped unless asked): the streamer decodes them.
  bytes(ids, { skipSpecial = true } = {}) {
    const out = [];
    for (const id of ids) {
      if (skipSpecial && this.special.has(id)) continue;
      const token = this.idToToken[id];
      if (token === undefined) continue;
      if (this.addedByContent.has(token)) {
        out.push(...this.utf8.encode(token));
        continue;
      }
      for (const c of token) out.push(this.byteDecoder.get(c));
    }
    return new Uint8Array(out);
  }

  decode(ids, options) {
    return new TextDecoder().decode(this.bytes(ids, options));
  }
}
