"""JSON files that must hold an object: read with one error that names the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path


def read_object(path: Path, error: type[Exception], fix: str) -> dict:
    """The JSON object in `path`; otherwise `error("<path> is not ...; <fix>")`."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({str(e).splitlines()[0]}); {fix}") from None
    if not isinstance(data, dict):
        raise error(f"{path} is not a JSON object; {fix}")
    return data
