"""The OpenAI request and response shapes: a request body in, a checked `Request` out (or an
`ApiError` naming the parameter), and the JSON objects OpenAI's clients expect back.

Supported: model, messages / prompt, max_tokens / max_completion_tokens, temperature, top_p, seed,
stop (a string or up to 4), presence_penalty, n (1), stream, stream_options.include_usage, user;
and, as vLLM's server accepts them (openai's `extra_body`), top_k, min_p, repetition_penalty,
ignore_eos. frequency_penalty, logprobs, tools and the rest are refused by name, not ignored.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from qwen_edge.runtime.generate import Sampling

IGNORED = {"user", "metadata", "store", "service_tier"}
COMMON = {"model", "max_tokens", "temperature", "top_p", "seed", "stop", "presence_penalty",
          "frequency_penalty", "n", "stream", "stream_options"} | IGNORED  # fmt: skip
EXTENSIONS = {"top_k", "min_p", "repetition_penalty", "ignore_eos"}  # vLLM's names
CHAT = COMMON | {"messages", "max_completion_tokens", "logprobs", "response_format"}
COMPLETION = COMMON | {"prompt", "echo", "logprobs", "best_of", "suffix"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Request:
    kind: str  # "chat" or "completion"
    prompt: list[int]
    sampling: Sampling
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def parse(kind: str, body, model_id: str, tokenizer, capacity: int, max_tokens_limit: int) -> Request:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    allowed = (CHAT if kind == "chat" else COMPLETION) | EXTENSIONS
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"Unrecognized request argument supplied: {unknown[0]}", unknown[0])
    model = body.get("model")
    if model != model_id:
        raise ApiError(404, f"The model `{model}` does not exist; this server serves `{model_id}`", "model",
                       "model_not_found")  # fmt: skip
    _refuse_unsupported(body)
    text = _chat_text(body.get("messages"), tokenizer) if kind == "chat" else _prompt_text(body.get("prompt"))
    prompt = tokenizer.encode(text)
    if not prompt:
        raise ApiError(400, "the prompt is empty", "prompt" if kind == "completion" else "messages")
    room = capacity - len(prompt)
    limit_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    wanted = body.get(limit_name)
    if wanted is not None and (not _whole(wanted) or wanted < 1):
        raise ApiError(400, f"{limit_name} must be a whole number >= 1", limit_name)
    if room < 1 or (wanted is not None and len(prompt) + wanted > capacity):
        raise ApiError(
            400,
            f"This model's maximum context length is {capacity} tokens. However, you requested "
            f"{len(prompt) + (wanted or 1)} tokens ({len(prompt)} in the messages, {wanted or 1} in the completion). "
            "Please reduce the length of the messages or completion.",
            "messages" if kind == "chat" else "prompt",
            "context_length_exceeded",
        )
    max_new = min(wanted or room, room, max_tokens_limit)
    sampling = Sampling(
        max_new_tokens=max_new,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        seed=_seed(body.get("seed")),
        top_k=_top_k(body.get("top_k")),
        min_p=_number(body, "min_p", 0.0, 0.0, 0.99),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.01, 10.0),
        ignore_eos=_flag(body, "ignore_eos"),
    )
    if sampling.top_p == 0:
        raise ApiError(400, "top_p must be greater than 0", "top_p")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise ApiError(400, "stream_options may only hold include_usage", "stream_options")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", "stream")
    if options and not stream:
        raise ApiError(400, "stream_options is only allowed when stream is true", "stream_options")
    return Request(kind, prompt, sampling, _stop(body.get("stop")), stream, bool(options.get("include_usage")))


def _refuse_unsupported(body: dict) -> None:
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1: this server returns one choice per request", "n")
    if body.get("frequency_penalty", 0) not in (0, 0.0):
        raise ApiError(400, "frequency_penalty is not supported; use presence_penalty", "frequency_penalty")
    if body.get("logprobs") not in (None, False, 0):
        raise ApiError(400, "logprobs are not supported", "logprobs")
    for name, default in (("echo", False), ("best_of", 1), ("suffix", None)):
        if body.get(name, default) != default:
            raise ApiError(400, f"{name} is not supported", name)
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise ApiError(400, 'response_format: only {"type": "text"} is supported', "response_format")


def _chat_text(messages, tokenizer) -> str:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects", "messages")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}", f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # parts: text only
            texts = [p.get("text") if isinstance(p, dict) and p.get("type") == "text" else None for p in content]
            if not all(isinstance(t, str) for t in texts):
                raise ApiError(400, f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
            content = "".join(texts)
        if content is None and m["role"] == "assistant":
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string", f"messages[{i}].content")
        turns.append({"role": ROLES[m["role"]], "content": content})
    try:
        return tokenizer.apply_chat_template(turns)
    except Exception as e:  # the template itself refused the conversation (bounded render)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ApiError(400, f"the chat template cannot render these messages: {reason}", "messages") from None


def _prompt_text(prompt) -> str:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (one prompt per request)", "prompt")
    return prompt


def _number(body: dict, name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or not lo <= value <= hi:
        raise ApiError(400, f"{name} must be a number from {lo:g} to {hi:g}", name)
    return float(value)


def _top_k(value) -> int:
    if value is None or value == -1:  # vLLM's "off"
        return 0
    if not _whole(value) or value < 0:
        raise ApiError(400, "top_k must be a whole number >= 0 (0 or -1: off)", "top_k")
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false", name)
    return value


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seed(value) -> int | None:
    if value is None:
        return None
    if not _whole(value) or not 0 <= value < 2**63:
        raise ApiError(400, "seed must be a whole number from 0 to 2**63 - 1", "seed")
    return value


def _stop(value) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "stop must be a non-empty string or a list of up to 4 of them", "stop")
    return tuple(stops)


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex


def usage(prompt: int, completion: int, cached: int, drafted: int = 0, accepted: int = 0) -> dict:
    """OpenAI's usage; prompt-lookup guesses as its predicted-output counts (accepted / rejected)."""
    use = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip
    if drafted:
        use["completion_tokens_details"] = {"accepted_prediction_tokens": accepted,
                                            "rejected_prediction_tokens": drafted - accepted}  # fmt: skip
    return use


def response(kind: str, rid: str, model: str, text: str, finish: str, use: dict) -> dict:
    base = {"id": rid, "created": int(time.time()), "model": model, "system_fingerprint": "qwen-edge", "usage": use}
    if kind == "chat":
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        return {**base, "object": "chat.completion", "choices": [choice]}
    choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    return {**base, "object": "text_completion", "choices": [choice]}


def chunk(kind: str, rid: str, model: str, text: str | None, finish: str | None, first: bool = False) -> dict:
    base = {"id": rid, "created": int(time.time()), "model": model, "system_fingerprint": "qwen-edge"}
    if kind == "chat":
        delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text is not None else {})
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**base, "object": "chat.completion.chunk", "choices": [choice]}
    return {**base, "object": "text_completion", "choices": [{"index": 0, "text": text or "", "finish_reason": finish,
                                                              "logprobs": None}]}  # fmt: skip


def usage_chunk(kind: str, rid: str, model: str, use: dict) -> dict:
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    return {"id": rid, "created": int(time.time()), "model": model, "object": obj, "choices": [], "usage": use}
