"""Load an export folder once, generate from it in as many sessions as you like.

    engine = Engine.load("out/qwen2-int4")                 # verified against its manifest
    session = engine.session()                              # its own KV cache
    for piece in session.stream("def fib(n):", max_new_tokens=64):
        print(piece, end="")
    result = session.generate("The capital of France is", max_new_tokens=8)
    chat = engine.chat(system="You are terse.")             # multi-turn, prefix reuse

An Engine holds the compiled model and is shared by threads; a Session holds one KV cache and is
used by one thread at a time (a second concurrent call is refused, not interleaved).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path

from . import backend as backends
from . import manifest as manifest_file
from . import speculative
from .backend import Backend
from .chat import Chat
from .generate import Sampling, generate, reusable_prefix
from .manifest import Manifest
from .result import EngineError, Result, first_line
from .speculative import DraftModel, PromptLookup
from .streaming import TextStreamer
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

# ONNX Runtime's idle threads spin for a while after a run, on the cores the next run needs. One
# session gains from it (0.5B INT4 decode 16.5 vs 18.3 ms here); two taking turns lose: a 1.5B check
# right after 0.5B draft steps took 106 ms instead of 75, the draft steps 23 instead of 17
# (benchmarks/sessions_taking_turns.py). So a target and its draft run without spinning.
TAKING_TURNS = {"session.intra_op.allow_spinning": "0"}

BACKENDS = ("auto", "onnxruntime", "openvino")
SAMPLING_FIELDS = {f.name for f in fields(Sampling)}


class Engine:
    def __init__(
        self, folder: Path, manifest: Manifest, model: Backend, tokenizer: Tokenizer, backend: str, load_s: float
    ):
        self.folder, self.manifest, self.model, self.tokenizer = folder, manifest, model, tokenizer
        self.backend, self.load_s = backend, load_s
        self.speculative = False  # set by load(speculative=True): the backend returns every position's logits
        self.draft: Engine | None = None  # set by load(draft=...): sessions guess with this model
        self.draft_confidence = 0.5

    @classmethod
    def load(
        cls,
        folder: str | Path,
        backend: str = "auto",
        device: str = "CPU",
        threads: int | None = None,
        config: dict | None = None,
        cache_dir: str | Path | None | bool = None,
        verify: bool | str = True,
        profile: bool = False,
        speculative: bool = False,
        warm_up: bool = False,
        draft: str | Path | Engine | None = None,
        draft_confidence: float = 0.5,
        turns: bool = False,
    ) -> Engine:
        """`config`: OpenVINO compile properties, or ONNX Runtime session config entries.
        `cache_dir`: where OpenVINO keeps compiled models, so a second load skips compilation (the
        1.5B INT4 IR on CPU: 5.9 s -> 1.3 s); by default under the user cache (runtime/user_cache.py,
        kept to 6 GB), False for none.
        `warm_up`: run one token at load. The first inference after an OpenVINO load repacks every
        weight (6 s of TTFT on the 1.5B INT4 IR); interactive callers (chat, serve, an app) pay it
        here, before the first prompt arrives.
        `verify`: True checks every file against the manifest (sha256 once, then size + mtime
        while unchanged), "full" always hashes, False reads the manifest only. `profile`: per-operator
        timing (OpenVINO performance counters, ONNX Runtime profiling), for `qwen-edge bench`.
        `speculative`: the backend returns the logits of every position it is fed, which checking
        guessed tokens needs (`session.generate(..., speculative=PromptLookup())`); a prompt's prefill
        then also computes the vocabulary projection of every prompt position.
        `draft`: a smaller model's folder (or Engine) with the same tokenizer; every session then
        guesses tokens with it and checks them in one forward (implies speculative). It stops
        guessing at a token it gives less than `draft_confidence` (on the real 1.5B with the 0.5B,
        0.5 halved the guesses, 85% of them kept, for 5-8% more tokens/s than 0:
        benchmarks/draft_confidence.py). `turns`: this engine takes turns with another in the process
        (a draft given as a folder is loaded so; load an Engine given as draft with turns=True too);
        see TAKING_TURNS."""
        start, folder = time.perf_counter(), Path(folder)
        speculative = speculative or draft is not None
        if backend not in BACKENDS:
            raise EngineError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if threads is not None and (type(threads) is not int or threads < 1):
            raise EngineError(f"threads must be a whole number >= 1 (or left out for the default), not {threads!r}")
        try:
            manifest = manifest_file.verify(folder, full=verify == "full") if verify else manifest_file.read(folder)
        except manifest_file.ManifestError as e:
            raise EngineError(str(e)) from None
        wanted = backends.BACKENDS[manifest.format][0]
        if backend not in ("auto", wanted):
            raise EngineError(f"{folder} is an {manifest.format} export: it runs on --backend {wanted}, not {backend}")
        if (draft is not None or turns) and wanted == "onnxruntime":
            config = {**TAKING_TURNS, **(config or {})}
        try:
            model = backends.load(folder, manifest, device, threads, config, cache_dir, profile, all_logits=speculative)
        except (manifest_file.ManifestError, backends.MissingPackage) as e:
            raise EngineError(str(e)) from None
        except (RuntimeError, OSError) as e:
            raise EngineError(f"{folder}: cannot load on {wanted} {device}: {first_line(e)}") from None
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise EngineError(
                f"{folder}: manifest.json does not describe the model in this folder ({type(e).__name__}: "
                f"{first_line(e)}); re-export the folder"
            ) from None
        listed = manifest.files
        tokenizer = Tokenizer(folder, listed) if "tokenizer.json" in listed else None  # ids-only folders
        load_s = time.perf_counter() - start
        log.debug("loaded %s on %s %s in %.2f s", folder, wanted, device, load_s)
        engine = cls(folder, manifest, model, tokenizer, wanted, load_s)
        engine.speculative = speculative
        if draft is not None:
            if not isinstance(draft, Engine):
                draft = cls.load(draft, device=device, threads=threads, cache_dir=cache_dir, verify=verify, turns=True)
            engine.draft, engine.draft_confidence = draft, draft_confidence
            _check_draft(engine, engine.draft)
            engine.load_s = time.perf_counter() - start
        if warm_up:
            engine.warm_up()
        return engine

    def warm_up(self) -> float:
        """One token through a throw-away session, so the first real prompt does not pay the
        runtime's one-time work; its seconds (also added to load_s)."""
        start = time.perf_counter()
        step = self.step()
        step.decode(int(step.prefill([0]).argmax()))  # the prefill and the decode shapes
        spent = time.perf_counter() - start
        self.load_s += spent
        log.debug("warm-up took %.2f s", spent)
        return spent

    @property
    def capacity(self) -> int | None:
        """Most tokens one session can hold (prompt and output)."""
        return self.model.capacity

    def session(self) -> Session:
        return Session(self)

    def step(self) -> CacheStep:
        """A bare prefill / decode interface over a new cache (for loops of your own)."""
        return CacheStep(self.model.new_cache())

    def generate(self, prompt: str | Sequence[int], **options) -> Result:
        return self.session().generate(prompt, **options)

    def chat(self, system: str | None = None, overflow: str = "error") -> Chat:
        return Chat(self.session(), system=system, overflow=overflow)


class Session:
    """One KV cache. Each call keeps the cached positions its prompt shares with what the cache
    holds (a chat's earlier turns, a repeated system prompt) and computes only the rest."""

    def __init__(self, engine: Engine):
        self.engine, self.cache = engine, engine.model.new_cache()
        self.tokens: list[int] = []  # what the cache holds, position by position
        self.draft = (  # with its own KV cache
            DraftModel(engine.draft.model, min_confidence=engine.draft_confidence) if engine.draft else None
        )
        self._busy = threading.Lock()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop the running generation before its next token (safe from any thread)."""
        self.cancelled.set()

    def stream(
        self, prompt: str | Sequence[int], stop: Sequence[str] = (), result: Result | None = None,
        speculative: PromptLookup | DraftModel | None = None, **options,
    ) -> Iterator[str]:  # fmt: skip
        """Text pieces as they are generated (whole characters only); fills `result` if given.
        `speculative`: guess tokens by prompt lookup (or a draft model) and check them in one
        forward (an engine loaded with speculative=True); by default the engine's draft model, if
        it was loaded with one."""
        speculative = speculative if speculative is not None else self.draft
        if speculative is not None and not self.engine.speculative:
            raise EngineError(
                "prompt lookup needs every position's logits: load with Engine.load(folder, speculative=True)"
            )
        unknown = set(options) - SAMPLING_FIELDS
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        sampling = Sampling(**options)
        tokenizer = self.engine.tokenizer
        if tokenizer is None:
            raise EngineError(f"{self.engine.folder} has no tokenizer.json: export the model with its tokenizer")
        if isinstance(prompt, str):
            _check_text(prompt)
        ids = tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if ids and not (0 <= min(ids) and max(ids) < tokenizer.vocab_size):
            raise EngineError(f"a prompt token id is outside the vocabulary (0 to {tokenizer.vocab_size - 1})")
        if not ids:
            raise EngineError("the prompt is empty: give at least one token")
        result = result if result is not None else Result("", ids, [])
        result.prompt_token_ids, result.stats.load_s = ids, self.engine.load_s
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this session is generating in another thread: give each thread its own session")
        try:
            yield from self._run(ids, sampling, tuple(stop), result, speculative)
        finally:
            self._busy.release()

    def _run(self, ids: list[int], sampling: Sampling, stop: tuple[str, ...], result: Result,
             lookup: PromptLookup | DraftModel | None = None) -> Iterator[str]:  # fmt: skip
        keep = reusable_prefix(self.tokens, ids)
        capacity = self.engine.capacity
        if capacity and len(ids) > capacity:
            raise EngineError(f"the prompt has {len(ids)} tokens; this model holds {capacity}: shorten it")
        room = capacity - len(ids) + 1 if capacity else sampling.max_new_tokens  # the last token is not fed back
        limited = room < sampling.max_new_tokens
        if limited:
            sampling = dataclasses.replace(sampling, max_new_tokens=room)
        self.cache.trim(keep)
        self.tokens = self.tokens[:keep]
        step = (_Verifier if lookup is not None else _Appender)(self, ids[keep:], capacity)
        streamer = TextStreamer(self.engine.tokenizer.decode, stop)
        self.cancelled.clear()
        eos = self.engine.tokenizer.eos_token_ids
        result.stopped_by = "length"
        if lookup is not None:
            tokens = speculative.generate(
                step, ids[keep:], sampling, lookup, eos, result.stats, self.cancelled, ids[:keep]
            )
        else:
            tokens = generate(step, ids[keep:], sampling, eos, result.stats, self.cancelled, history=ids[:keep])
        for token in tokens:
            result.token_ids.append(token)
            piece = streamer.put(token)
            if piece:
                result.text += piece
                yield piece
            if streamer.stopped:
                result.stopped_by = "stop"
                return
        if self.cancelled.is_set():
            result.stopped_by = "cancelled"
        elif result.stats.new_tokens < sampling.max_new_tokens:
            result.stopped_by = "eos"
        elif limited:
            result.stopped_by = "context"
        tail = streamer.end()
        if tail:
            result.text += tail
            yield tail

    def generate(self, prompt: str | Sequence[int], stop: Sequence[str] = (), **options) -> Result:
        result = Result("", [], [])
        for _ in self.stream(prompt, stop=stop, result=result, **options):
            pass
        return result


class CacheStep:
    """prefill(ids): a fresh cache holding ids; decode(token): one more. Both return the logits."""

    def __init__(self, cache):
        self.cache = cache

    def prefill(self, ids):
        self.cache.trim(0)
        return self.cache.append(list(ids))

    def decode(self, token: int):
        return self.cache.append([token])


class _Appender:
    """The generation loops' steps over a session's cache, keeping `session.tokens` in step with
    what the cache holds: prefill / decode give the last position's logits (plain decoding),
    extend gives every fed position's and trim rolls back (speculative decoding)."""

    def __init__(self, session: Session, new: list[int], capacity: int | None):
        self.session, self.new, self.capacity = session, new, capacity

    def _append(self, ids: list[int], last: bool = False):
        if self.capacity and len(self.session.tokens) + len(ids) > self.capacity:
            raise EngineError(f"the conversation reached this model's {self.capacity} tokens: start a new one")
        logits = self.session.cache.append(ids, last=last)
        self.session.tokens.extend(ids)
        return logits

    def prefill(self, ids):
        return self._append(list(ids), last=True)

    def decode(self, token: int):
        return self._append([token], last=True)


class _Verifier(_Appender):
    """Speculative decoding's steps: every position's logits, and trim."""

    @property
    def length(self) -> int:
        return len(self.session.tokens)

    def extend(self, ids):
        return self._append(list(ids))

    def prefill(self, ids):  # the prompt: only its last position's logits are wanted
        return self._append(list(ids), last=True)[None]

    def trim(self, n: int) -> None:
        self.session.cache.trim(n)
        del self.session.tokens[n:]


def _check_draft(engine: Engine, draft: Engine) -> None:
    """A draft's guesses are token ids: it must share the target's vocabulary, id for id."""
    mine, theirs = engine.tokenizer, draft.tokenizer
    same = mine is not None and theirs is not None and mine.vocab_size == theirs.vocab_size
    if not same or mine.vocabulary() != theirs.vocabulary():
        raise EngineError(
            f"the draft model {draft.folder} does not share {engine.folder}'s tokenizer: use a draft of the "
            "same family (Qwen2.5-0.5B for Qwen2.5 1.5B / 7B)"
        )


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates: undecodable bytes from argv or a pipe
        raise EngineError(
            f"the prompt is not valid UTF-8 text (character {e.start}): pass UTF-8 encoded text"
        ) from None
