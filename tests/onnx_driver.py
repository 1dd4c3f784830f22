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


def _outputs(sess):
    return [o.name for o in sess.get_outputs()]
