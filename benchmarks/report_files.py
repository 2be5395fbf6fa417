"""How every report script in benchmarks/ leaves its result: OUT/NAME.json, OUT/NAME.md, and the
Markdown on stdout. Each file is written atomically, so an interrupted run never leaves half a report."""

from __future__ import annotations

import json
from pathlib import Path

from edgewise.fsutil import write_text_atomic


def _numpy_scalar(value):
    """numpy scalars (an int64 count, a float32 mean) as the Python numbers they hold; anything
    else is still an error, so a report never stores a repr by accident."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def write_report(out: Path, name: str, report: dict, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # serialized before anything is written: a report that cannot be stored leaves the old files
    text = json.dumps(report, indent=2, default=_numpy_scalar) + "\n"
    write_text_atomic(out / f"{name}.json", text)
    write_text_atomic(out / f"{name}.md", markdown)
    print(markdown)
