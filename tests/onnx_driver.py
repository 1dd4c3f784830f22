"""Drive exported graphs with plain ONNX Runtime (a test harness, not the product runtime)."""

import numpy as np
import onnxruntime as ort
import torch


def session(folder, name="model.onnx"):
    return ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])


def empty_past(cfg, batch, length):
    shape = (batch, cfg.num_key_value_heads, length, cfg.head_dim)
    return {
        f"past_key_values.{i}.{part}": np.zeros(shape, np.float32)
        for i in range(cfg.num_hidden_layers)
        for part in ("key", "value")
    }


def run_portable(sess, cfg, ids, split):
    """Prefill ids[:, :split], then one token at a time: logits of every position."""
    b, t = ids.shape
    past, out, start = empty_past(cfg, b, 0), [], 0
    for stop in [split, *range(split + 1, t + 1)]:
        feed = {
            "input_ids": ids[:, start:stop],
            "attention_mask": np.ones((b, stop), np.int64),
            "position_ids": np.broadcast_to(np.arange(start, stop), (b, stop - start)).copy(),
            **past,
        }
        feed = {k: v for k, v in feed.items() if k in _inputs(sess)}  # the ort graph has no position_ids
        logits, *present = sess.run(None, feed)
        past = {
            name.replace("present", "past_key_values"): v for name, v in zip(_outputs(sess)[1:], present, strict=True)
        }
        out.append(logits)
        start = stop
    return np.concatenate(out, axis=1)


def torch_logits(model, ids):
    ids = torch.from_numpy(ids)
    with torch.no_grad():
        pos = torch.arange(ids.shape[1])[None].expand_as(ids)
        return model(ids, pos, torch.ones_like(ids), model.empty_cache(ids.shape[0]))[0].numpy()


def _inputs(sess):
    return {i.name for i in sess.get_inputs()}


def _outputs(sess):
    return [o.name for o in sess.get_outputs()]


def run_static(prefill, decode, cfg, ids, n_prompt, max_prompt, max_context):
    """Chunked prefill of ids[:n_prompt] through the fixed window, then one-token decodes of the
    rest of ids. Returns logits for positions n_prompt - 1 .. len(ids) - 1.

    A prompt longer than one chunk goes in whole chunks; the last chunk is the prompt's last
    max_prompt tokens, overlapping slots already written (their keys and values come out the same)."""
    assert len(ids) <= max_context
    past = empty_past(cfg, 1, max_context)
    names = [o.name.replace("present", "past_key_values") for o in prefill.get_outputs()][1:]

    def call(sess, tokens, slots, filled):
        nonlocal past
        feed = {
            "input_ids": np.array([tokens], np.int64),
            "attention_mask": (np.arange(max_context) < filled).astype(np.int64)[None],
            "position_ids": np.array([slots], np.int64),
            "cache_position": np.array(slots, np.int64),
            **past,
        }
        logits, *present = sess.run(None, feed)
        past = dict(zip(names, present, strict=True))
        return logits[0]

    prompt = [int(t) for t in ids[:n_prompt]]
    if n_prompt <= max_prompt:  # one chunk padded at the end; pad slots are masked, later overwritten
        padded = prompt + [0] * (max_prompt - n_prompt)
        out = [call(prefill, padded, list(range(max_prompt)), n_prompt)[n_prompt - 1]]
    else:
        for start in [*range(0, n_prompt - max_prompt, max_prompt), n_prompt - max_prompt]:
            chunk = list(range(start, start + max_prompt))
            last = call(prefill, prompt[start : start + max_prompt], chunk, start + max_prompt)[-1]
        out = [last]
    for slot in range(n_prompt, len(ids)):
        out.append(call(decode, [int(ids[slot])], [slot], slot + 1)[0])
    return np.stack(out)


class OVSession:
    """An OpenVINO IR behind the slice of ORT's InferenceSession API that run_static uses."""

    def __init__(self, model):
        import openvino as ov

        self.names = [o.get_any_name() for o in model.outputs]
        compiled = ov.Core().compile_model(
            model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
        )
        self.request = compiled.create_infer_request()

    def get_outputs(self):
        return [type("Output", (), {"name": n}) for n in self.names]

    def run(self, _, feed):
        result = self.request.infer(feed)
        return [result[n] for n in self.names]
