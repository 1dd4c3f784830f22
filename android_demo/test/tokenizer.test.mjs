// The JS tokenizer against the Python tokenizer's ids. The pytest wrapper (tests/test_android_demo.py)
// writes the cases: QWEN_EDGE_TOKENIZER_CASES={"tokenizer": path to tokenizer.json, "cases": [[text, ids]]}.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { Template } from "@huggingface/jinja";

import { Tokenizer } from "../src/tokenizer.js";

const spec = process.env.QWEN_EDGE_TOKENIZER_CASES;

test("encodes like the Python tokenizer and decodes back", { skip: !spec && "no cases given" }, () => {
  const { tokenizer, cases } = JSON.parse(readFileSync(spec, "utf8"));
  const tok = new Tokenizer(JSON.parse(readFileSync(tokenizer, "utf8")));
  let checked = 0;
  for (const [text, ids] of cases) {
    assert.deepEqual(tok.encode(text), ids, `encode ${JSON.stringify(text.slice(0, 60))}`);
    assert.equal(tok.decode(ids, { skipSpecial: false }), text.normalize("NFC"));
    checked++;
  }
  assert.ok(checked === cases.length && checked > 0);
});

test("special tokens are one id each and skipped when decoding", { skip: !spec && "no cases given" }, () => {
  const { tokenizer } = JSON.parse(readFileSync(spec, "utf8"));
  const tok = new Tokenizer(JSON.parse(readFileSync(tokenizer, "utf8")));
  const ids = tok.encode("<|im_start|>user\nhi<|im_end|>");
  // Qwen2's published ids, not read back from the tables under test
  assert.equal(ids[0], 151644);
  assert.equal(ids.at(-1), 151645);
  assert.equal(tok.decode(ids), "user\nhi");
});

test("renders the chat template as the Python runtime does", { skip: !spec && "no cases given" }, () => {
  const { template, eos_token: eosToken, chats } = JSON.parse(readFileSync(spec, "utf8"));
  const jinja = new Template(template); // what the app renders with (src/app.js)
  for (const [messages, expected] of chats) {
    assert.equal(jinja.render({ messages, add_generation_prompt: true, eos_token: eosToken }), expected);
  }
  assert.ok(chats.length >= 3 && chats.some(([m]) => m[0].role === "system"));
});
