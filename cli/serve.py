"""Serve an export folder over the OpenAI API (chat and completions, streaming), batching requests.

Binds 127.0.0.1 unless --host says otherwise. With --api-key (or QWEN_EDGE_API_KEY), every /v1
request needs `Authorization: Bearer KEY`. Up to --parallel requests decode together (one forward
per step on ONNX `ort` folders); up to --max-queue wait, and more are answered 429 at once.
SIGTERM / Ctrl-C lets running answers finish, then exits. Needs the `serve` extra.

    qwen-edge serve out/qwen-int4 --port 8000
    python -c "from openai import OpenAI; c = OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='-'); \\
        print(c.chat.completions.create(model='qwen-int4', messages=[{'role': 'user', 'content': 'Hi'}]))"
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .runtime_options import add_engine_options, engine_kwargs

log = logging.getLogger("qwen_edge.serve")


class ServeError(ValueError):
    """The server cannot start as asked."""


def configure_parser(p) -> None:
    p.add_argument("folder", help="an export folder (qwen-edge export ...)")
    p.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default); 0.0.0.0 to reach it from other machines")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this bearer key (default: $QWEN_EDGE_API_KEY; none: open)")
    p.add_argument("--model-name", help="the model id clients send (default: the folder's name)")
    p.add_argument("--parallel", type=int, default=4, help="requests decoded together (default 4)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond --parallel (default 64)")
    p.add_argument("--max-tokens-limit", type=int, default=4096, help="most new tokens one request may ask for")
    p.add_argument(
        "--batching", choices=("auto", "runtime", "genai"), default="auto",
        help="auto: openvino_genai's ContinuousBatchingPipeline on stateful OpenVINO folders (measured faster), "
        "our runtime elsewhere",
    )  # fmt: skip
    p.add_argument(
        "--exact", action=argparse.BooleanOptionalAction, default=True,
        help="genai batching: f32 compute and KV cache (default; measured faster here than the CPU plugin's own "
        "bf16 / u8 choice on AMX CPUs, and what client CPUs without AMX run anyway); --no-exact: the plugin's choice",
    )  # fmt: skip
    p.add_argument(
        "--prompt-lookup", action="store_true",
        help="speculative decoding by prompt lookup for every request: guesses from earlier text checked in one "
        "forward (the same greedy text; faster when answers repeat the prompt, e.g. code edits). Runtime batching",
    )  # fmt: skip
    add_engine_options(p)


def run(folder: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
        model_name: str | None = None, parallel: int = 4, max_queue: int = 64, max_tokens_limit: int = 4096,
        batching: str = "auto", exact: bool = True, **options) -> None:  # fmt: skip
    app, model_id = make_app(folder, api_key, model_name, parallel, max_queue, max_tokens_limit, batching, exact,
                             **options)  # fmt: skip
    import uvicorn

    from qwen_edge.server.app import DRAIN_S

    if not 0 <= port <= 65535:
        raise ServeError(f"--port {port} is not a port number: choose one from 1 to 65535")
    log.info("serving %s as %r on http://%s:%d/v1 (parallel %d, queue %d)", folder, model_id, host, port, parallel,
             max_queue)  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=DRAIN_S + 5)


def make_app(folder: str, api_key: str | None = None, model_name: str | None = None, parallel: int = 4,
             max_queue: int = 64, max_tokens_limit: int = 4096, batching: str = "auto", exact: bool = True,
             **options):  # fmt: skip
    """The ASGI app for `folder` and the model id it answers to (for tests and embedding)."""
    try:
        from qwen_edge.server.app import build_app
    except ImportError as e:
        missing = f"the server needs the serve extra ({e.name} is missing)"
        raise ServeError(f"{missing}: pip install 'qwen-edge[serve]'") from None
    from qwen_edge.runtime import Engine

    if parallel < 1 or max_queue < 0 or max_tokens_limit < 1:
        raise ServeError("--parallel and --max-tokens-limit must be >= 1, --max-queue >= 0")
    if batching not in ("auto", "runtime", "genai"):
        raise ServeError(f"unknown batching {batching!r}: auto, runtime or genai")
    manifest = _manifest(folder)
    stateful_ir = manifest.format == "openvino" and manifest.graph == "stateful"
    if batching == "genai" and not stateful_ir:
        raise ServeError(f"{folder} is an {manifest.format} {manifest.graph} folder: --batching genai needs a stateful "
                         "OpenVINO IR; use --batching runtime")  # fmt: skip
    guessing = "--prompt-lookup" if options.get("prompt_lookup") else "--draft" if options.get("draft") else None
    if guessing and batching == "genai":
        raise ServeError(f"{guessing} runs in our runtime's batching: use --batching runtime (or auto)")
    if guessing and manifest.graph == "static":
        raise ServeError(f"{folder} is a static-shape graph: {guessing} checks guesses in one forward, which "
                         "needs a dynamic graph (ort, portable, or an OpenVINO IR)")  # fmt: skip
    # auto: genai's pipeline on stateful IRs (measured faster), but speculative decoding is ours
    batching = ("genai" if stateful_ir and not guessing else "runtime") if batching == "auto" else batching
    kwargs = engine_kwargs(options)
    if batching == "genai":
        engine = _Served(folder, manifest, exact, **kwargs)  # the pipeline warms itself up (server/ov_pipeline.py)
    else:
        engine = Engine.load(folder, **kwargs, warm_up=True)
    if engine.tokenizer is None:
        raise ServeError(f"{folder} has no tokenizer.json: the API takes text; export the model with its tokenizer")
    model_id = model_name or Path(folder).resolve().name
    key = api_key or os.environ.get("QWEN_EDGE_API_KEY") or None
    from qwen_edge.runtime.speculative import PromptLookup

    return build_app(engine, model_id, parallel, max_queue, key, max_tokens_limit, batching,
                     PromptLookup() if options.get("prompt_lookup") else None), model_id  # fmt: skip


def _manifest(folder: str):
    from qwen_edge.runtime import manifest as manifest_file

    try:
        return manifest_file.verify(Path(folder))
    except manifest_file.ManifestError as e:
        raise ServeError(str(e)) from None


class _Served:
    """What the genai pipeline path needs of a folder (the pipeline loads the model itself)."""

    def __init__(self, folder: str, manifest, exact: bool, device: str = "CPU", threads: int | None = None,
                 cache_dir=None, **_):  # fmt: skip
        from qwen_edge.runtime.openvino_backend import EXACT, compile_cache
        from qwen_edge.runtime.tokenizer import Tokenizer

        self.folder, self.device = Path(folder), device
        self.properties = {**(EXACT if exact else {}), **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        if cache_dir is not False:
            self.properties["CACHE_DIR"] = compile_cache(cache_dir, device, self.properties)
        self.tokenizer = Tokenizer(self.folder, manifest.files) if "tokenizer.json" in manifest.files else None
        self.capacity = manifest.max_context
