"""Calibration text -> token windows -> the inputs NNCF's data-aware methods run the model on.

The text is the user's file or a built-in sample (varied English prose and some code, written for
this project, so calibration works offline and never touches an evaluation set).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

BUILTIN_NAME = "built-in sample"

BUILTIN = """\
The river town grew up around a ford where traders crossed with salt, wool and timber. By the
seventeenth century it had a stone bridge, two markets a week and a grammar school whose registers
survive almost complete. Historians have used them to trace how families moved between trades: a
weaver's son became a clerk, a clerk's daughter kept an inn, and an innkeeper's grandson sailed
for the colonies and wrote letters home about tobacco prices and the weather.

Photosynthesis converts light energy into chemical energy. In the light-dependent reactions, water
is split, oxygen is released, and the energy carriers ATP and NADPH are produced. The Calvin cycle
then uses them to fix carbon dioxide into three-carbon sugars, which the plant assembles into
glucose, sucrose and starch. Temperature, light intensity and the supply of carbon dioxide each
limit the rate in turn.

When the committee met on Tuesday, the chair opened with the budget. Spending on roads had run
twelve percent over the estimate because of the wet spring; the library was under budget after a
vacancy went unfilled. A resident asked why the swimming pool would close in October rather than
September, and was told that the heating contract ran to the end of the month.

def moving_average(values, window):
    \"\"\"Mean of each run of `window` consecutive values.\"\"\"
    if window <= 0:
        raise ValueError("window must be positive")
    total, out = 0.0, []
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        if i >= window - 1:
            out.append(total / window)
    return out

The novel follows a lighthouse keeper through one winter. Nothing much happens: supply boats are
late, a storm takes the radio mast, a fox crosses the ice and stays for a week. What holds the book
together is the keeper's log, in which each entry begins with the wind's direction and ends, more
and more often, with a line of poetry copied from memory.

In 1969 the first message between two computers of the ARPANET was sent from Los Angeles to
Stanford. The system crashed after two letters. Within a few years the network linked dozens of
universities, and the protocols designed for it, refined into TCP/IP, still carry most of the
world's traffic. Email, rather than remote computing, turned out to be what people used it for.

SELECT customer_id, COUNT(*) AS orders, SUM(total) AS spent
FROM orders
WHERE placed_at >= DATE '2024-01-01'
GROUP BY customer_id
HAVING COUNT(*) > 3
ORDER BY spent DESC;

Bread rises because yeast ferments sugars and releases carbon dioxide, which the gluten network
traps in small bubbles. A long, cool fermentation gives more flavour than a short, warm one; salt
slows the yeast and tightens the dough. Bakers judge readiness by touch: a well-proofed loaf springs
back slowly when pressed, while an over-proofed one collapses.

The treaty settled the border along the watershed, which sounded precise in the capital and turned
out to be anything but on the ground. Surveyors spent three summers arguing over which streams
counted as sources. In the end they built cairns every mile and left the valleys to the shepherds,
who had never paid much attention to either government.

Questions for discussion: Why did the author choose a first-person narrator? How does the setting
shape the characters' choices? Which events could have gone differently, and what would have
changed? Compare the ending with the opening chapter and explain what the main character has
learned, if anything.
"""


class CalibrationError(ValueError):
    """The calibration text cannot feed the data-aware methods."""


def read_text(path: str | Path | None, flag: str = "--calibration") -> tuple[str, str]:
    """(text, where it came from); the built-in sample when no path is given. `flag` is the
    option the user gave the path with, for the error messages."""
    if path is None:
        return BUILTIN, BUILTIN_NAME
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{flag} file {path} does not exist; give a text file or leave {flag} out")
    data = path.read_bytes()
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, data.index(b"\0"), data.index(b"\0") + 1, "NUL byte")
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CalibrationError(
            f"{flag} file {path} is not UTF-8 text ({e.reason} at byte {e.start}); give a text file"
        ) from None
    if not text.strip():
        raise CalibrationError(f"{flag} file {path} is empty; give a text file with some prose or code in it")
    return text, str(path)


def windows(tokens: list[int], count: int, length: int) -> list[list[int]]:
    """Up to `count` non-overlapping windows of `length` tokens (a short text gives fewer; a text
    shorter than one window gives one window of all its tokens)."""
    if len(tokens) < 16:
        raise CalibrationError(f"calibration text has only {len(tokens)} tokens; give at least a paragraph")
    if len(tokens) < length:
        return [tokens]
    return [tokens[i : i + length] for i in range(0, len(tokens) - length + 1, length)][:count]


def openvino_items(token_windows: list[list[int]]) -> list[dict]:
    """One input dict per window for a stateful IR (NNCF resets the state between items)."""
    items = []
    for w in token_windows:
        ids = np.array([w], np.int64)
        items.append(
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "position_ids": np.arange(len(w), dtype=np.int64)[None],
                "beam_idx": np.zeros(1, np.int32),
            }
        )
    return items


def describe(text: str, source: str, token_windows: list[list[int]]) -> dict:
    return {
        "source": source,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "windows": len(token_windows),
        "tokens": sum(len(w) for w in token_windows),
    }
