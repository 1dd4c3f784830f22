"""Render a model's chat template as transformers does, in a sandbox with bounds.

A chat template is code shipped inside a model folder. The jinja sandbox already refuses attribute
tricks (`__mro__`, `__globals__`); it does not bound work, so `range(100000)` inside
`range(100000)` would hang the caller. Here the render runs under a time limit (checked on every
line the template executes), its output size is capped, and `*` / `**` may not build huge values.
Every failure is a ChatTemplateError naming the problem.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from datetime import datetime

RENDER_SECONDS = 2.0  # real templates render in about a millisecond
MAX_CHARS = 4_000_000  # ~1M tokens: far past any context window


class ChatTemplateError(ValueError):
    """The chat template cannot render these messages."""


class _OutOfTime(Exception):
    pass


def render(template: str, **context) -> str:
    """The template rendered with `context`, or a ChatTemplateError."""
    import jinja2

    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template is not valid jinja (line {e.lineno}: {e.message})") from None
    deadline = time.monotonic() + RENDER_SECONDS

    def line(frame, event, arg):
        if time.monotonic() > deadline:
            raise _OutOfTime
        return line

    def call(frame, event, arg):  # trace only the template's own compiled code
        return line if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    sys.settrace(call)
    try:
        pieces, size = [], 0
        for piece in compiled.generate(**context):
            size += len(piece)
            if size > MAX_CHARS:
                raise ChatTemplateError(
                    f"the chat template wrote over {MAX_CHARS:,} characters; it is not a chat prompt"
                )
            pieces.append(piece)
        return "".join(pieces)
    except _OutOfTime:
        raise ChatTemplateError(
            f"the chat template ran for over {RENDER_SECONDS:g} s and was stopped; use the model's original template"
        ) from None
    except jinja2.exceptions.SecurityError as e:
        raise ChatTemplateError(f"the chat template tried something the sandbox forbids ({e})") from None
    except _Refused as e:
        raise ChatTemplateError(f"the chat template refused these messages: {e}") from None
    except ChatTemplateError:
        raise
    except Exception as e:  # anything a template's own code raises is the template's fault, not ours
        raise ChatTemplateError(f"the chat template failed ({type(e).__name__}: {e})") from None
    finally:
        sys.settrace(previous)


class _Refused(Exception):
    """raise_exception() called by the template."""


@functools.lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Env(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_CHARS:
                        raise SecurityError(f"'*' would build a value of {len(seq) * n:,} items")
            if operator == "**" and isinstance(right, int) and abs(right) > 1024:
                raise SecurityError("'**' with an exponent over 1024")
            return super().call_binop(context, operator, left, right)

    def raise_exception(message):
        raise _Refused(message)

    env = Env(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)
