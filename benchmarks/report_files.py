"""How every report script in benchmarks/ leaves its result: OUT/NAME.json, OUT/NAME.md, and the
Markdown on stdout. Each file is written atomically, so an interrupted run never leaves half a report."""

from __future__ import annotations

from pathlib import Path

from edgewise.fsutil import write_report_files


def write_report(out: Path, name: str, report: dict, markdown: str) -> None:
    write_report_files(out, name, report, markdown)
    print(markdown)
