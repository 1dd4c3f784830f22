"""Options shared by the commands that run a folder (generate, chat): sampling and engine."""

from __future__ import annotations

SAMPLING = ("max_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty")
ENGINE = ("backend", "device", "threads", "cache_dir", "draft", "draft_confidence")


def add_sampling_options(p, max_new_tokens: int = 64) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    p.add_argument("--top-k", type=int, default=0, help="0: off")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--presence-penalty", type=float, default=0.0)
    p.add_argument("--seed", type=int, help="sampling seed (same seed, same text)")
    p.add_argument("--ignore-eos", action="store_true", help="keep going past the end-of-text token")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument(
        "--prompt-lookup", action="store_true",
        help="speculative decoding by prompt lookup: guesses from earlier text checked in one forward "
        "(the same greedy text, faster when the answer repeats the prompt, e.g. code edits)",
    )  # fmt: skip


def add_engine_options(p) -> None:
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "openvino"))
    p.add_argument("--device", default="CPU", help="CPU (default), GPU, NPU, AUTO (OpenVINO); or an ORT provider")
    p.add_argument("--threads", type=int, help="inference threads (default: the runtime's choice)")
    p.add_argument(
        "--cache-dir",
        help="OpenVINO compiled-model cache, so a second load skips compilation (default: under the user cache, "
        "kept to 6 GB)",
    )
    p.add_argument("--no-model-cache", action="store_true", help="OpenVINO: compile on every load, keep nothing")
    p.add_argument(
        "--draft", metavar="FOLDER",
        help="speculative decoding with a smaller model of the same tokenizer (e.g. Qwen2.5-0.5B for 1.5B): "
        "its guesses are checked in one forward of the model (the same greedy text)",
    )  # fmt: skip
    p.add_argument(
        "--draft-confidence", type=float,
        help="with --draft: stop guessing at a token the draft gives less probability than this (default 0.5)",
    )  # fmt: skip


def sampling_kwargs(options: dict) -> tuple[dict, tuple[str, ...]]:
    """(Sampling keyword arguments, stop strings); out-of-range values fail here, in one line."""
    from qwen_edge.runtime.generate import Sampling

    sampling = {k: options[k] for k in SAMPLING}
    sampling.update(seed=options.get("seed"), ignore_eos=options.get("ignore_eos", False))
    Sampling(**sampling)
    return sampling, tuple(options.get("stop") or ())


def engine_kwargs(options: dict) -> dict:
    kwargs = {k: options[k] for k in ENGINE if options.get(k) is not None}
    if options.get("no_model_cache"):
        if "cache_dir" in kwargs:
            from qwen_edge.runtime.result import EngineError

            raise EngineError("--cache-dir and --no-model-cache disagree: give one")
        kwargs["cache_dir"] = False
    confidence = options.get("draft_confidence")
    if confidence is not None and not (options.get("draft") and 0 <= confidence < 1):
        from qwen_edge.runtime.result import EngineError

        raise EngineError("--draft-confidence needs --draft and a value in [0, 1)")
    if options.get("draft") and options.get("prompt_lookup"):
        from qwen_edge.runtime.result import EngineError

        raise EngineError("--draft and --prompt-lookup are two ways to guess tokens: give one")
    return {**kwargs, "speculative": True} if options.get("prompt_lookup") else kwargs


def lookup_kwargs(options: dict) -> dict:
    """{"speculative": PromptLookup()} with --prompt-lookup, else {}."""
    from qwen_edge.runtime.speculative import PromptLookup

    return {"speculative": PromptLookup()} if options.get("prompt_lookup") else {}
