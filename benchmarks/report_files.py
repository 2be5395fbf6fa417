"""How every report script in benchmarks/ leaves its result: OUT/NAME.json, OUT/NAME.md, and the
Markdown on stdout. Each file is written atomically, so an interrupted run never leaves half a report."""

from __future__ import annotations

import json
from pathlib import Path

from edgewise.fsutil import write_text_atomic


def write_report(out: Path, name: str, report: dict, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{name}.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / f"{name}.md", markdown)
    print(markdown)
