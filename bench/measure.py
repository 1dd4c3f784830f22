"""Latency and memory of export folders, ours and the ecosystem runtimes', measured the same way.

One *case* = one runtime on one folder, measured in a process of its own (`python -m
qwen_edge.bench.measure CASE_JSON`), so its peak RSS is its own and nothing it loaded helps the
next case. In a case: load (timed), one warm-up generation (excluded), then for each prompt length
`reps` prompts cut from real text at different offsets (no prefix cache can help), each followed
by `new_tokens` greedy tokens with EOS ignored. Per token the wall clock is stamped; from the
stamps: TTFT, per-token decode latency (TPOT), decode and prefill tokens/s. The first prompt is
run once more at the end: its output hash must not change (a benchmark that changes its own
output is broken: `stable`).

Runtimes: `ours` (qwen_edge.runtime on any folder), `ours-draft` (with a draft model: --draft),
`ours-lookup` (the same with prompt-lookup
speculative decoding: the same greedy tokens, checked; faster where the text repeats its prompt),
`llm-pipeline` (openvino_genai), `optimum-intel`
(OVModelForCausalLM) on OpenVINO folders, `ort-genai` (onnxruntime_genai) on `ort` folders, and
`optimum-onnx` (ORTModelForCausalLM) on ONNX folders, and `llama.cpp` (llama-cpp-python) on the GGUF
a folder was exported from: the file a llama.cpp user would run. A runtime that is not installed,
or a device that is absent, is reported as such, never as a failure.
"""

from __future__ import annotations

import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

RUNTIMES_FOR = {
    "openvino": ("ours", "llm-pipeline", "optimum-intel", "llama.cpp"),
    "onnx": ("ours", "ort-genai", "optimum-onnx", "llama.cpp"),
}
MODULE_OF = {
    "llama.cpp": "llama_cpp",
    "llm-pipeline": "openvino_genai",
    "optimum-intel": "optimum.intel",
    "ort-genai": "onnxruntime_genai",
    "optimum-onnx": "optimum.onnxruntime",
}


@dataclass
class Case:
    runtime: str
    folder: str
    prompt_lengths: list[int]
    new_tokens: int | list[int] = 32  # one generation length, or a sweep
    reps: int = 3
    seed: int = 0
    device: str = "CPU"
    text: str | None = None
    profile: bool = False
    draft: str | None = None  # ours-draft's draft model folder
    draft_confidence: float = 0.5


@dataclass
class Outcome:
    runtime: str
    folder: str
    status: str = "ok"  # "ok", "absent" (runtime or device missing), "failed"
    note: str = ""
    load_s: float = 0.0
    peak_rss_mb: float = 0.0
    stable: bool | None = None
    samples: list[dict] = field(default_factory=list)
    profile: list[dict] = field(default_factory=list)
    pid: int = 0  # the process that measured it: a fresh one per case

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- prompts and statistics


def prompts(tokens: Sequence[int], length: int, reps: int, seed: int) -> list[list[int]]:
    """`reps` windows of `length` tokens at different offsets of `tokens` (repeated if short)."""
    tokens = list(tokens)
    while len(tokens) < length * (reps + 1):
        tokens += tokens
    rng = np.random.default_rng(seed + length)
    starts = rng.choice(len(tokens) - length, size=reps, replace=False)
    return [tokens[s : s + length] for s in sorted(int(x) for x in starts)]


def from_stamps(start: float, stamps: Sequence[float], prompt_tokens: int) -> dict:
    """A sample's timings from the clock at prompt-in and at each new token."""
    ttft = stamps[0] - start
    tpot = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    decode_s = stamps[-1] - stamps[0]
    return {
        "prompt_tokens": prompt_tokens,
        "new_tokens": len(stamps),
        "ttft_s": ttft,
        "tpot_s": tpot,
        "decode_tokens_per_s": len(tpot) / decode_s if decode_s > 0 else 0.0,
        "prefill_tokens_per_s": prompt_tokens / ttft if ttft > 0 else 0.0,
    }


def summarize(samples: list[dict]) -> dict[int | str, dict]:
    """Per prompt length (per "prompt+new" when several generation lengths were run): median and
    p10 / p90 of TTFT and decode tokens/s over the repetitions, TPOT p50 / p90 over every decode
    step, median prefill tokens/s."""
    out = {}
    sweep = len({s["new_tokens"] for s in samples}) > 1
    for key in sorted({(s["prompt_tokens"], s["new_tokens"]) for s in samples}):
        group = [s for s in samples if (s["prompt_tokens"], s["new_tokens"]) == key]
        length = f"{key[0]}+{key[1]}" if sweep else key[0]
        ttft = [s["ttft_s"] for s in group]
        tps = [s["decode_tokens_per_s"] for s in group]
        tpot = [t for s in group for t in s["tpot_s"]]
        out[length] = {
            "runs": len(group),
            "ttft_s": statistics.median(ttft),
            "ttft_s_p10": float(np.percentile(ttft, 10)),
            "ttft_s_p90": float(np.percentile(ttft, 90)),
            "tpot_s_p50": float(np.percentile(tpot, 50)) if tpot else None,
            "tpot_s_p90": float(np.percentile(tpot, 90)) if tpot else None,
            "decode_tokens_per_s": statistics.median(tps),
            "decode_tokens_per_s_p10": float(np.percentile(tps, 10)),
            "decode_tokens_per_s_p90": float(np.percentile(tps, 90)),
            "prefill_tokens_per_s": statistics.median(s["prefill_tokens_per_s"] for s in group),
        }
        overhead = [s["overhead_share"] for s in group if s.get("overhead_share") is not None]
        if overhead:  # ours only: decode time spent outside the backend call
            out[length]["overhead_share"] = statistics.median(overhead)
    return out


def output_hash(tokens: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(tokens, np.int64).tobytes()).hexdigest()[:16]


def peak_rss_mb() -> float:
    """This process's own peak resident set. On Linux, VmHWM of /proc/self/status: getrusage's
    ru_maxrss survives fork and exec, so a small process started by a big one would report the
    parent's peak (measured: a 1 GB parent's child reported 1 GB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# ---------------------------------------------------------------- runners: load + run(ids, n)
# run(ids, n) -> (token ids, clock at prompt-in, clock at each new token)


def _ours(case: Case):
    from qwen_edge.runtime.engine import Engine
    from qwen_edge.runtime.generate import Sampling, generate

    engine = Engine.load(case.folder, device=case.device, profile=case.profile)
    state = {"engine": engine}

    def run(ids, n):
        step = state["step"] = TimedStep(engine.step())
        start, stamps, out = time.perf_counter(), [], []
        for token in generate(step, ids, Sampling(max_new_tokens=n, ignore_eos=True)):
            stamps.append(time.perf_counter())
            out.append(token)
        decode_s = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
        # the share of decode time outside the backend call: sampling, streaming, bookkeeping
        state["extra"] = {"overhead_share": max(0.0, 1 - step.decode_s / decode_s) if decode_s > 0 else None}
        return out, start, stamps

    return run, engine.tokenizer.encode, state


def _ours_speculative(case: Case):
    """Ours with prompt lookup (ours-lookup) or a draft model (ours-draft): tokens come in bursts
    (several checked in one forward), each stamped when the session hands it out."""
    from qwen_edge.runtime.engine import Engine
    from qwen_edge.runtime.result import Result
    from qwen_edge.runtime.speculative import PromptLookup

    draft = case.runtime == "ours-draft"
    engine = Engine.load(case.folder, device=case.device, speculative=True, draft=case.draft if draft else None,
                         draft_confidence=case.draft_confidence)  # fmt: skip
    state = {"engine": engine}

    def run(ids, n):
        result, stamps = Result("", [], []), []
        start = time.perf_counter()
        stream = engine.session().stream(ids, max_new_tokens=n, ignore_eos=True, result=result,
                                         speculative=None if draft else PromptLookup())  # fmt: skip
        for _ in stream:
            stamps += [time.perf_counter()] * (len(result.token_ids) - len(stamps))
        stamps += [time.perf_counter()] * (len(result.token_ids) - len(stamps))
        state["extra"] = {"drafted": result.stats.drafted, "accepted": result.stats.accepted}
        return result.token_ids, start, stamps

    return run, engine.tokenizer.encode, state


class TimedStep:
    """A Step that adds up the time spent inside the backend's decode calls."""

    def __init__(self, step):
        self.inner, self.cache, self.decode_s = step, step.cache, 0.0

    def prefill(self, ids):
        return self.inner.prefill(ids)

    def decode(self, token):
        start = time.perf_counter()
        logits = self.inner.decode(token)
        self.decode_s += time.perf_counter() - start
        return logits


def _llm_pipeline(case: Case):
    import openvino as ov
    import openvino_genai

    pipe = openvino_genai.LLMPipeline(case.folder, case.device)
    tokenizer = pipe.get_tokenizer()

    def encode(text):
        return [int(t) for t in tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]

    def run(ids, n):
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens, config.ignore_eos, config.do_sample = n, True, False
        arr = np.array([ids], np.int64)
        start = time.perf_counter()
        out = pipe.generate(openvino_genai.TokenizedInputs(ov.Tensor(arr), ov.Tensor(np.ones_like(arr))), config)
        raw = out.perf_metrics.raw_metrics
        # LLMPipeline's own clock (µs): time to the first token, then one duration per later token
        # (m_durations alone has n - 1 entries: reading it as the first token's time was a bug here)
        first = start + raw.m_times_to_first_token[0] / 1e6
        stamps = [first, *(first + np.cumsum([d / 1e6 for d in raw.m_durations]))]
        return [int(t) for t in out.tokens[0]], start, stamps

    return run, encode, {}


def _ort_genai(case: Case):
    import onnxruntime_genai as og

    model = og.Model(case.folder)
    tokenizer = og.Tokenizer(model)

    def run(ids, n):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        generator = og.Generator(model, params)
        start, stamps, out = time.perf_counter(), [], []
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
            stamps.append(time.perf_counter())
        return out, start, stamps

    return run, lambda text: [int(t) for t in tokenizer.encode(text)], {}


def _optimum(case: Case, onnx: bool):
    import torch
    from transformers import AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    if onnx:
        from optimum.onnxruntime import ORTModelForCausalLM as Model
    else:
        from optimum.intel import OVModelForCausalLM as Model
    model = Model.from_pretrained(case.folder, **({} if onnx else {"device": case.device}))
    tokenizer = AutoTokenizer.from_pretrained(case.folder)

    class Stamps(BaseStreamer):
        def __init__(self):
            self.stamps, self.first = [], True

        def put(self, value):
            if self.first:  # the prompt itself is put first
                self.first = False
                return
            self.stamps.append(time.perf_counter())

        def end(self):
            pass

    def run(ids, n):
        streamer = Stamps()
        start = time.perf_counter()
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=streamer
        )
        return out[0, len(ids) :].tolist(), start, streamer.stamps

    return run, lambda text: tokenizer.encode(text, add_special_tokens=False), {}


def source_gguf(folder: str) -> str | None:
    """The GGUF file a folder was exported from, if that is where it came from and it is still there."""
    from qwen_edge.runtime.manifest import read

    path = (read(folder).raw.get("source") or {}).get("path")
    return path if path and path.lower().endswith(".gguf") and Path(path).is_file() else None


class NoSource(Exception):
    """The case's runtime needs a file this folder does not point to."""


def _llama_cpp(case: Case):
    import os

    from llama_cpp import Llama

    gguf = source_gguf(case.folder)
    if gguf is None:
        raise NoSource("the folder was not exported from a GGUF file that is still in place")
    llm = Llama(gguf, n_ctx=max(case.prompt_lengths) + 64 + max(np.atleast_1d(case.new_tokens)),
                n_threads=os.cpu_count(), n_batch=512, verbose=False)  # fmt: skip

    def run(ids, n):
        llm.reset()  # no prefix reuse between prompts: every runtime here computes each prompt whole
        start, stamps, out = time.perf_counter(), [], []
        for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(int(token))
            stamps.append(time.perf_counter())
            if len(out) == n:  # EOS ignored: the same n tokens as every runtime
                break
        return out, start, stamps

    return run, lambda text: llm.tokenize(text.encode(), add_bos=False, special=False), {}


RUNNERS: dict[str, Callable] = {
    "ours-lookup": _ours_speculative,
    "ours-draft": _ours_speculative,
    "llama.cpp": _llama_cpp,
    "ours": _ours,
    "llm-pipeline": _llm_pipeline,
    "ort-genai": _ort_genai,
    "optimum-intel": lambda case: _optimum(case, onnx=False),
    "optimum-onnx": lambda case: _optimum(case, onnx=True),
}


# ---------------------------------------------------------------- one case, in this process


def measure(case: Case, runner=None, clock=time.perf_counter) -> Outcome:
    """Run `case` here. `runner` (tests) replaces the registered one: case -> (run, encode, state)."""
    import os

    outcome = Outcome(case.runtime, case.folder, pid=os.getpid())
    start = clock()
    try:
        run, encode, state = (runner or RUNNERS[case.runtime])(case)
    except ImportError as e:
        return Outcome(case.runtime, case.folder, "absent", f"not installed ({e.name or e})")
    except NoSource as e:
        return Outcome(case.runtime, case.folder, "absent", str(e))
    except Exception as e:  # noqa: BLE001 - a runtime that cannot load this folder is a result, not a crash
        from qwen_edge.runtime.result import first_line

        text = first_line(e)
        status = "absent" if "not present on this machine" in text else "failed"
        return Outcome(case.runtime, case.folder, status, text[:300])
    outcome.load_s = clock() - start
    tokens = encode(_text(case.text))
    run(tokens[:16], 4)  # warm-up, excluded
    first = None
    news = case.new_tokens if isinstance(case.new_tokens, list) else [case.new_tokens]
    for new in news:
        for length in case.prompt_lengths:
            for rep, ids in enumerate(prompts(tokens, length, case.reps, case.seed)):
                out, t0, stamps = run(ids, new)
                sample = from_stamps(t0, stamps, length) | {"rep": rep, "output_sha": output_hash(out)}
                sample |= state.pop("extra", {})
                outcome.samples.append(sample)
                first = first or (ids, new, sample["output_sha"])
    if first is not None:
        again, _, _ = run(first[0], first[1])
        outcome.stable = output_hash(again) == first[2]
    if case.profile and case.runtime == "ours":
        outcome.profile = _profile(state)
    outcome.peak_rss_mb = peak_rss_mb()
    return outcome


def _text(path: str | None) -> str:
    if path:
        return Path(path).read_text(encoding="utf-8")
    from qwen_edge.quantize.calibration import BUILTIN  # real prose and code, written for this project

    return BUILTIN


def _profile(state: dict, top: int = 10) -> list[dict]:
    """Top operator types by time, as the backend reports them (see Backend.profile)."""
    return state["engine"].model.profile(state["step"].cache, top)


# ---------------------------------------------------------------- many cases, each in a subprocess


def measure_in_subprocess(case: Case, timeout: float = 3600) -> Outcome:
    out = subprocess.run(
        [sys.executable, "-m", "qwen_edge.bench.measure", json.dumps(asdict(case))],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        if out.returncode < 0:  # killed by a signal: a native crash (SIGILL: a build for another CPU)
            import signal

            tail = f"the runtime crashed ({signal.Signals(-out.returncode).name}); {tail}"
        return Outcome(case.runtime, case.folder, "failed", tail[:300])
    return Outcome(**json.loads(lines[-1]))


def memory_bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """Read bandwidth of this machine's memory: the median time to sum a buffer larger than the
    caches, one slice per core in threads (numpy releases the GIL; one core alone does not
    saturate the memory bus, and the runtimes use every core)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    a = np.ones(megabytes * (1 << 20) // 8, np.float64)
    parts = np.array_split(a, os.cpu_count() or 1)
    with ThreadPoolExecutor(len(parts)) as pool:
        list(pool.map(np.sum, parts))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            times.append(time.perf_counter() - t)
    return a.nbytes / statistics.median(times) / 1e9


def weight_bytes(folder: str | Path) -> int:
    """Bytes of a folder's weight files."""
    folder = Path(folder)
    files = [*folder.glob("*.bin"), *folder.glob("*.onnx.data"), *folder.glob("*.onnx_data")]
    return sum(f.stat().st_size for f in files if "tokenizer" not in f.name)


def bytes_per_token(folder: str | Path) -> tuple[int, int]:
    """(weight bytes, bytes a decode step reads): all weights but an untied embedding table, of
    which one row is read per token. Found from the graph: the table feeding the Gather (or
    GatherBlockQuantized) that does not also feed a MatMul."""
    from qwen_edge.runtime.manifest import read

    folder = Path(folder)
    total = weight_bytes(folder)
    manifest = read(folder)
    table = _onnx_table_bytes(folder, manifest) if manifest.format == "onnx" else _ov_table_bytes(folder)
    rows = manifest.config.get("vocab_size") or 1
    return total, total - table + table // rows


def _ov_table_bytes(folder: Path) -> int:
    import openvino as ov

    model = ov.Core().read_model(str(folder / "openvino_model.xml"))
    for op in model.get_ops():
        if op.get_type_name() != "Gather" or op.get_input_partial_shape(0).rank.get_length() != 2:
            continue
        consts, stack = [], [op.input_value(0).get_node()]
        while stack:  # the table and its decompression chain: Constant -> Convert -> Subtract -> Multiply
            node = stack.pop()
            if node.get_type_name() == "Constant":
                consts.append(node)
            elif node.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape"):
                stack += [v.get_node() for v in node.input_values()]
        top = op.input_value(0).get_node()  # a tied table feeds lm_head's MatMul too (maybe via a Convert)
        users = [t.get_node() for out in top.outputs() for t in out.get_target_inputs()]
        users += [t.get_node() for u in users for out in u.outputs() for t in out.get_target_inputs()]
        if consts and not any(u.get_type_name() == "MatMul" for u in users):
            return sum(c.get_byte_size() for c in consts)
    return 0


def _onnx_table_bytes(folder: Path, manifest: dict) -> int:
    try:
        import onnx
    except ImportError:  # the runtime alone: count every weight
        return 0
    graph = onnx.load(str(folder / manifest.model_file), load_external_data=False).graph
    sizes = {}
    for t in graph.initializer:
        length = next((int(e.value) for e in t.external_data if e.key == "length"), None)
        sizes[t.name] = length if length is not None else len(t.raw_data)
    matmul_inputs = {i for n in graph.node if n.op_type.startswith("MatMul") for i in n.input}
    for node in graph.node:
        if node.op_type in ("Gather", "GatherBlockQuantized") and node.input[0] in sizes:
            if node.input[0] not in matmul_inputs:
                extra = [node.input[2]] if node.op_type == "GatherBlockQuantized" else []
                return sum(sizes.get(n, 0) for n in [node.input[0], *extra])
    return 0


if __name__ == "__main__":
    result = measure(Case(**json.loads(sys.argv[1])))
    print(json.dumps(result.to_dict()))
