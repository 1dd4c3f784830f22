"""Chat with an export folder: a multi-turn REPL that keeps the KV cache between turns.

Each line you type is a user turn; the reply streams back. /reset forgets the conversation,
/exit (or end of input) leaves. Works with piped stdin too: one turn per line.
"""

from __future__ import annotations

import sys

from .runtime_options import add_engine_options, add_sampling_options, engine_kwargs, lookup_kwargs, sampling_kwargs


def configure_parser(p) -> None:
    p.add_argument("folder", help="an export folder with a chat template")
    p.add_argument("--system", help="system message")
    p.add_argument("--overflow", choices=("error", "trim"), default="trim", help="when the context is full")
    p.add_argument("--stats", action="store_true", help="print each reply's stats on stderr")
    add_sampling_options(p, max_new_tokens=256)
    add_engine_options(p)


def run(folder: str, system: str | None = None, overflow: str = "trim", stats: bool = False, **options) -> int:
    from qwen_edge.runtime import Engine, EngineError

    from .generate import _stats_line

    engine = Engine.load(folder, **engine_kwargs(options), warm_up=True)  # before the first line is typed
    if engine.tokenizer is None or not engine.tokenizer.chat_template:
        raise EngineError(f"{folder} has no chat template: use qwen-edge generate with a raw prompt")
    sampling, stop = sampling_kwargs(options)
    chat = engine.chat(system=system, overflow=overflow)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = _read_line()
        if line is None:
            print("qwen-edge chat: that line is not valid UTF-8 text; it was skipped", file=sys.stderr)
            continue
        if not line or line.strip() == "/exit":
            return 0
        text = line.rstrip("\n")
        if text.strip() == "/reset":
            chat.reset()
            continue
        if not text.strip():
            continue
        try:
            for piece in chat.send(text, stop=stop, **sampling, **lookup_kwargs(options)):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:  # Ctrl-C stops the reply, not the chat
            chat.session.cancel()
        sys.stdout.write("\n")
        sys.stdout.flush()
        if stats and chat.last is not None:
            print(_stats_line(chat.last), file=sys.stderr)


def _read_line() -> str | None:
    """One line of standard input; None for a line that is not UTF-8 (it is skipped, not fatal)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream given by a caller
        return sys.stdin.readline()
    try:
        return stream.readline().decode("utf-8")
    except UnicodeDecodeError:
        return None
