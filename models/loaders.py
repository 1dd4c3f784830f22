"""Turn whatever the user names as MODEL into our Qwen2 module with its weights.

MODEL may be: a name the fetcher knows (the real Qwen2.5-Coder-0.5B-Instruct GGUF), a registry
shape name (random weights), an HF folder (safetensors only: pickles are never loaded), a GGUF
file, or a hub id (when the hub is reachable).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from qwen_edge.runtime.json_file import read_object
from qwen_edge.runtime.manifest import sha256_file
from qwen_edge.runtime.result import first_line

from . import fetch, gguf_file, lazy, safetensors_file, shapes
from .qwen2 import Qwen2Config, Qwen2ForCausalLM, UnsupportedModelError, sanitize

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "generation_config.json")


class ModelSourceError(ValueError):
    """MODEL names nothing loadable; the message says what was expected."""


@dataclass
class Loaded:
    model: Qwen2ForCausalLM
    source: dict  # kind, where it came from, and its sha256 when it is one file
    tokenizer_dir: Path | None = None  # holds tokenizer.json + tokenizer_config.json (chat template)

    @property
    def config(self) -> Qwen2Config:
        return self.model.config


def load(source: str, dtype: torch.dtype = torch.float32, seed: int = 0, tokenizer: str | None = None) -> Loaded:
    """Load MODEL (see module doc) in `dtype`. `tokenizer`: where its tokenizer comes from instead
    (see tokenizer_folder). A shape name at Qwen2's vocabulary gets the Qwen2.5 tokenizer of the
    real 0.5B (random weights measure speed; they still take text)."""
    loaded = _load(str(source), dtype, seed)
    if tokenizer is None and loaded.source["kind"] == "random" and loaded.config.vocab_size >= QWEN25_TOKENS:
        tokenizer = "qwen2.5-coder-0.5b-instruct"
    return _with_tokenizer(loaded, tokenizer)


def _with_tokenizer(loaded: Loaded, tokenizer: str | None) -> Loaded:
    if tokenizer is not None:
        loaded.tokenizer_dir = tokenizer_folder(tokenizer, loaded.config)
        loaded.source = {**loaded.source, "tokenizer": str(tokenizer)}
    return loaded


QWEN25_TOKENS = 151_665  # the Qwen2 / Qwen2.5 tokenizer's size, special tokens included


def tokenizer_folder(where: str | Path, cfg: Qwen2Config) -> Path:
    """A folder holding tokenizer.json (+ chat template, generation config) for a model of `cfg`:
    `where` is such a folder (an HF folder, an export), a GGUF file, or a known model name (fetched
    and verified if it is not cached yet). Refused when its ids do not fit the model's vocabulary."""
    from tokenizers import Tokenizer as Backend

    name = str(where)
    if name.lower() in fetch.KNOWN_FILES:
        path = fetch.fetch(fetch.KNOWN_FILES[name.lower()])
    else:
        path = Path(name).expanduser()
    if path.is_file() and (path.suffix.lower() == ".gguf" or _magic(path) == b"GGUF"):
        reader = gguf_file._reader(path)
        folder = gguf_tokenizer(path, fetch.verified_sha256(path), gguf_file.read_config(path, reader), reader)
    elif (path / "tokenizer.json").is_file():
        folder = path
    else:
        raise ModelSourceError(
            f"tokenizer {name!r}: give a folder holding tokenizer.json, a .gguf file or a known model "
            f"({', '.join(fetch.KNOWN_FILES)})"
        )
    try:
        size = Backend.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    except Exception as e:  # tokenizers raises its own Exception type on a malformed file
        raise ModelSourceError(f"{folder / 'tokenizer.json'} is not a readable tokenizer ({first_line(e)})") from None
    if size > cfg.vocab_size:
        raise ModelSourceError(
            f"the tokenizer in {folder} has {size} tokens, more than the model's {cfg.vocab_size}: "
            "give the tokenizer this model was trained with"
        )
    return folder


def _load(src: str, dtype: torch.dtype, seed: int) -> Loaded:
    if src.lower() in fetch.KNOWN_FILES:
        return load_gguf(fetch.fetch(fetch.KNOWN_FILES[src.lower()]), dtype)
    if src in shapes.SHAPES:
        return Loaded(shapes.random_model(src, dtype, seed), {"kind": "random", "shape": src, "seed": seed})
    path = Path(src).expanduser()
    if path.is_dir():
        return load_hf_folder(path, dtype)
    if path.is_file():
        if path.suffix.lower() == ".gguf" or _magic(path) == b"GGUF":
            return load_gguf(path, dtype)
        raise ModelSourceError(f"{path} is neither a GGUF file nor an HF model folder")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", src) and not src.startswith("."):
        return load_hf_folder(_hub_download(src), dtype, {"kind": "hub", "repo_id": src})
    raise ModelSourceError(
        f"{src!r} is not a folder, a .gguf file, a hub id, a known model "
        f"({', '.join(fetch.KNOWN_FILES)}) or a shape ({', '.join(shapes.SHAPES)})"
    )


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def source_paths(model: str | Loaded) -> list[Path]:
    """The files or folders MODEL is read from (an export must never write over them)."""
    if isinstance(model, Loaded):
        return [Path(model.source["path"])] if model.source.get("path") else []
    path = Path(str(model)).expanduser()
    return [path] if path.exists() else []


def load_hf_folder(folder: Path, dtype=torch.float32, source: dict | None = None) -> Loaded:
    cfg, files = _hf_folder(folder)
    # One digest for the folder: sha256 over the config's and each weight file's sha256, hashed on
    # a second thread while the weights are read (hashlib lets go of the GIL).
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(_hf_digest, folder, files)
        weights = {}
        for f in files:
            weights.update(safetensors_file.read(f, dtype))
        model = from_weights(cfg, weights, dtype, where=str(folder))
        src = {**(source or {"kind": "hf", "path": str(folder.resolve())}), "sha256": digest.result()}
    return Loaded(model, src, folder if (folder / "tokenizer.json").exists() else None)


def _hf_folder(folder: Path) -> tuple[Qwen2Config, list[Path]]:
    config_path = folder / "config.json"
    if not config_path.exists():
        raise ModelSourceError(f"{folder} has no config.json: is it an HF model folder?")
    cfg = Qwen2Config.from_dict(read_object(config_path, ModelSourceError, "give the model's config.json"))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
        hint = (
            f"only pickle weights ({', '.join(pickles)}), which qwen-edge never loads: save as safetensors"
            if pickles
            else "no *.safetensors weights"
        )
        raise ModelSourceError(f"{folder} has {hint}")
    return cfg, files


def _hf_digest(folder: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in [folder / "config.json", *files]:
        digest.update(f"{f.name} {sha256_file(f)}\n".encode())
    return digest.hexdigest()


def load_gguf(path: Path, dtype=torch.float32) -> Loaded:
    path = Path(path)
    reader = gguf_file._reader(path)
    cfg = gguf_file.read_config(path, reader)
    # Each tensor is cast as it is dequantized: one model's worth of memory in `dtype` (fp16 for an
    # fp16 export: half of fp32), plus one tensor in fp32.
    weights = gguf_file.read_tensors(path, cfg, dtype, reader)
    model = from_weights(cfg, weights, dtype, where=path.name)
    return Loaded(model, *_gguf_source(path, cfg, reader))


def _gguf_source(path: Path, cfg: Qwen2Config, reader) -> tuple[dict, Path]:
    sha = fetch.verified_sha256(path) or (sha256_file(path) if path.stat().st_size < (4 << 30) else None)
    tok_dir = gguf_tokenizer(path, sha, cfg, reader)
    return {"kind": "gguf", "path": str(path.resolve()), "sha256": sha}, tok_dir


def open_lazy(source: str, dtype: torch.dtype = torch.float32, tokenizer: str | None = None) -> Loaded:
    """MODEL with its weights left in the file, read tensor by tensor by whoever uses them
    (lazy.LazyModel): a GGUF file, a known model or an HF folder. Raises lazy.LazyError for what
    must be loaded whole (random shapes, MoE, hub ids)."""
    src = str(source)
    path = fetch.fetch(fetch.KNOWN_FILES[src.lower()]) if src.lower() in fetch.KNOWN_FILES else Path(src).expanduser()
    if path.is_dir():
        cfg, files = _hf_folder(path)
        model = lazy.from_safetensors(path, files, cfg, dtype)
        loaded = Loaded(model, {"kind": "hf", "path": str(path.resolve()), "sha256": _hf_digest(path, files)},
                        path if (path / "tokenizer.json").exists() else None)  # fmt: skip
    elif path.is_file() and (path.suffix.lower() == ".gguf" or _magic(path) == b"GGUF"):
        reader = gguf_file._reader(path)
        cfg = gguf_file.read_config(path, reader)
        loaded = Loaded(lazy.from_gguf(path, cfg, dtype, reader), *_gguf_source(path, cfg, reader))
    else:
        raise lazy.LazyError(f"{src} is loaded whole (only GGUF files, known models and HF folders are read lazily)")
    return _with_tokenizer(loaded, tokenizer)


def from_weights(cfg: Qwen2Config, weights: dict, dtype, where: str) -> Qwen2ForCausalLM:
    """Our module holding exactly these tensors (taken over, not copied: one model in memory, not
    two); a mismatch is named, not a torch traceback."""
    weights = sanitize(weights, cfg)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    expected = dict(model.state_dict())
    if cfg.tie_word_embeddings:
        expected.pop("lm_head.weight")
    problem = lazy.mismatch({k: v.shape for k, v in expected.items()}, {k: v.shape for k, v in weights.items()}, where)
    if problem:
        raise ModelSourceError(problem)
    # Pop as we go so a dtype conversion never holds both copies of the whole model.
    state = {name: weights.pop(name).to(dtype).contiguous() for name in list(expected)}
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, assign=True, strict=True)
    return model.materialized()


def gguf_tokenizer(path: Path, sha: str | None, cfg: Qwen2Config, reader=None) -> Path:
    """tokenizer.json, tokenizer_config.json, chat template and generation_config.json rebuilt
    from the GGUF's metadata, cached per file so it is built once.

    transformers' converter builds the tokenizer from the vocabulary and merges we already parsed
    (its own `from_pretrained(gguf_file=...)` path re-reads the file twice with gguf-py: ~30 s
    on the 0.5B; the files written are the same, tested)."""
    key = (sha or f"{path.stat().st_size}-{path.stat().st_mtime_ns}")[:16]
    out = fetch.cache_dir() / "tokenizers" / key
    if (out / "tokenizer.json").exists():
        return out
    import tempfile

    from transformers import Qwen2Tokenizer
    from transformers.integrations.ggml import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

    log.info("building the tokenizer from %s", path.name)
    fields = (reader or gguf_file._reader(path)).fields

    def pick(part: str) -> dict:
        keys = GGUF_TOKENIZER_MAPPING[part].items()
        return {ours: fields[f"tokenizer.{k}"] for k, ours in keys if f"tokenizer.{k}" in fields}

    backend, extra = convert_gguf_tokenizer(cfg.model_type, pick("tokenizer"))
    tok = Qwen2Tokenizer(tokenizer_object=backend, **pick("tokenizer_config"), **extra)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tok.save_pretrained(tmp)
        # An instruct GGUF ends turns with its own eos (<|im_end|>), the tokenizer with <|endoftext|>.
        eos = [i for i in dict.fromkeys([cfg.eos_token_id, tok.eos_token_id]) if i is not None]
        generation = {"bos_token_id": cfg.bos_token_id, "eos_token_id": eos}
        (Path(tmp) / "generation_config.json").write_text(json.dumps(generation, indent=2))
        Path(tmp).rename(out)
    return out


def _hub_download(repo_id: str) -> Path:
    if not fetch.hub_reachable():
        raise ModelSourceError(
            f"could not get {repo_id!r} from the hub (not reachable from here); download it where the hub is "
            "reachable and pass the folder"
        )
    try:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:
        raise ModelSourceError(
            f"could not get {repo_id!r} from the hub ({type(e).__name__}); download it where the hub is "
            "reachable and pass the folder"
        ) from None


__all__ = ["load", "source_paths", "Loaded", "ModelSourceError", "UnsupportedModelError"]
