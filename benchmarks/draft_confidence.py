"""How unsure a draft model may be before it stops guessing (DraftModel's min_confidence): the real
1.5B INT4 with the 0.5B INT4 as draft, 4 general chat prompts, 64 new tokens, greedy, 2 rounds in
one process. -1 is plain decoding (a speculative engine whose guesses never match).

    .venv/bin/python benchmarks/draft_confidence.py TARGET DRAFT -1,0,0.5,0.8,0.95
"""

from __future__ import annotations

import sys
from pathlib import Path

from qwen_edge.runtime import Engine
from qwen_edge.runtime.speculative import DraftModel, PromptLookup

sys.path.insert(0, str(Path(__file__).parent))
from draft_speculation import PROMPTS  # noqa: E402


def main(target: str, draft: str, confidences: str) -> None:
    engine = Engine.load(target, draft=draft, warm_up=True)
    engine.draft.warm_up()
    tok = engine.tokenizer
    prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": p}])) for p in PROMPTS[:4]]
    for round_ in range(2):
        for c in (float(x) for x in confidences.split(",")):
            decode_s, tokens, drafted, accepted = 0.0, 0, 0, 0
            for ids in prompts:
                spec = DraftModel(engine.draft.model, min_confidence=c) if c >= 0 else PromptLookup(50, 50)
                r = engine.session().generate(ids, max_new_tokens=64, speculative=spec)
                decode_s += r.stats.total_s - r.stats.ttft_s
                tokens += r.stats.new_tokens - 1
                drafted, accepted = drafted + r.stats.drafted, accepted + r.stats.accepted
            rate = accepted / max(drafted, 1)
            print(f"round {round_} min_confidence {c:5.2f}: {tokens / decode_s:6.2f} tok/s, drafted {drafted}, "
                  f"kept {rate:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:4])
