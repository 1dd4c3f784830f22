"""The model's own tokenizer and chat template, with no transformers: tokenizers + jinja2."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path


class TokenizerError(ValueError):
    """The folder lacks a usable tokenizer.json / chat template."""


class Tokenizer:
    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer as HFTokenizer

        folder = Path(folder)
        if not (folder / "tokenizer.json").exists():
            raise TokenizerError(f"{folder} has no tokenizer.json: export the model with its tokenizer")
        self._tok = HFTokenizer.from_file(str(folder / "tokenizer.json"))
        config = _read_json(folder / "tokenizer_config.json")
        template_file = folder / "chat_template.jinja"
        self.chat_template = template_file.read_text() if template_file.exists() else config.get("chat_template")
        self.eos_token = _token_text(config.get("eos_token"))
        generation = _read_json(folder / "generation_config.json")
        eos = generation.get("eos_token_id", [])
        eos = eos if isinstance(eos, list) else [eos]
        if self.eos_token is not None and self.token_to_id(self.eos_token) is not None:
            eos.append(self.token_to_id(self.eos_token))
        self.eos_token_ids = tuple(dict.fromkeys(eos))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render messages exactly as transformers does (same jinja2 settings and helpers)."""
        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat template; pass a raw prompt instead of chat messages")
        return _compile(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, eos_token=self.eos_token
        )


def _compile(template: str):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _token_text(token) -> str | None:
    return token.get("content") if isinstance(token, dict) else token
