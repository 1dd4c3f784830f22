"""Generate text from an export folder (ONNX Runtime or OpenVINO), streamed to the terminal.

The prompt is raw text unless --chat wraps it in the model's chat template. --json prints one
object instead: text, prompt and new token ids, and the request's stats.
"""

from __future__ import annotations

import sys

from .runtime_options import add_engine_options, add_sampling_options, engine_kwargs, lookup_kwargs, sampling_kwargs


def configure_parser(p) -> None:
    p.add_argument("folder", help="an export folder (qwen-edge export / quantize)")
    p.add_argument("-p", "--prompt", required=True, help="the prompt (raw text; a user message with --chat)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--system", help="system message (with --chat)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    add_sampling_options(p)
    add_engine_options(p)


def run(folder: str, prompt: str, chat: bool = False, system: str | None = None, json: bool = False, **options):
    import json as json_module

    from qwen_edge.runtime import Engine, EngineError, Result

    sampling, stop = sampling_kwargs(options)  # checked before the model loads
    engine = Engine.load(folder, **engine_kwargs(options))
    if chat:
        if engine.tokenizer is None or not engine.tokenizer.chat_template:
            raise EngineError(f"{folder} has no chat template: drop --chat and pass a raw prompt")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        prompt = engine.tokenizer.apply_chat_template(messages)
    result = Result("", [], [])
    pieces = engine.session().stream(prompt, stop=stop, result=result, **sampling, **lookup_kwargs(options))
    if json:
        for _ in pieces:
            pass
        print(json_module.dumps(result.to_dict(), ensure_ascii=False))
        return result.to_dict()
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    print(_stats_line(result), file=sys.stderr)
    return result.to_dict()


def _stats_line(result) -> str:
    s = result.stats
    return (
        f"[{s.prompt_tokens} prompt tokens, {s.new_tokens} new; load {s.load_s:.2f} s, TTFT {s.ttft_s:.3f} s, "
        f"decode {s.decode_tokens_per_s:.1f} tok/s; stopped by {result.stopped_by}"
        + (f"; guesses kept {s.accepted} of {s.drafted}]" if s.drafted else "]")
    )
