"""The model's own tokenizer and chat template, with no transformers: tokenizers + jinja2."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from . import chat_template
from .json_file import read_object


class TokenizerError(ValueError):
    """The folder lacks a usable tokenizer.json / chat template."""


class Tokenizer:
    def __init__(self, folder: str | Path, files: Collection[str] | None = None):
        """`files`: when given (an export folder's manifest list), only these names are read: an
        unlisted file dropped into the folder (say a chat_template.jinja) is never used."""
        from tokenizers import Tokenizer as HFTokenizer

        folder = Path(folder)

        def path(name: str) -> Path | None:
            p = folder / name
            return p if (files is None or name in files) and p.is_file() else None

        if path("tokenizer.json") is None:
            raise TokenizerError(f"{folder} has no tokenizer.json: export the model with its tokenizer")
        try:
            self._tok = HFTokenizer.from_file(str(path("tokenizer.json")))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise TokenizerError(f"{folder}/tokenizer.json cannot be read ({e}); re-export the folder") from None
        config = _read_json(path("tokenizer_config.json"))
        template_file = path("chat_template.jinja")
        self.chat_template = template_file.read_text() if template_file else config.get("chat_template")
        if self.chat_template is not None and not isinstance(self.chat_template, str):
            raise TokenizerError(f"{folder}: the chat template is not text; re-export the folder")
        self.eos_token = _token_text(config.get("eos_token"))
        generation = _read_json(path("generation_config.json"))
        eos = generation.get("eos_token_id", [])
        eos = [t for t in (eos if isinstance(eos, list) else [eos]) if type(t) is int]
        if self.eos_token is not None and self.token_to_id(self.eos_token) is not None:
            eos.append(self.token_to_id(self.eos_token))
        self.eos_token_ids = tuple(dict.fromkeys(eos))
        # Read once: tokenizers rebuilds its vocabulary to count it (60 ms for Qwen's 151 k tokens),
        # and a per-token check of prompt ids cost 15 s on a 256-token prompt.
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def vocabulary(self) -> dict[str, int]:
        """Every token (added ones too) and its id."""
        return self._tok.get_vocab(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render messages exactly as transformers does (same jinja2 settings and helpers)."""
        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat template; pass a raw prompt instead of chat messages")
        return chat_template.render(
            self.chat_template, messages=messages, add_generation_prompt=add_generation_prompt, eos_token=self.eos_token
        )


def _read_json(path: Path | None) -> dict:
    if path is None:
        return {}
    return read_object(path, TokenizerError, "re-export the folder")


def _token_text(token) -> str | None:
    return token.get("content") if isinstance(token, dict) else token
