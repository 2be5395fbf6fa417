"""An emulated board's report: every timing says it is emulated, memory/size/parity do not, and no
device-profile order is suggested from emulated timings.

Fast: the "measurement" is the published report (benchmarks/results/bench/bench.json) with the
environment an emulated board records; the report is written for real (JSON through the schema,
Markdown, matplotlib plots), only nothing is measured.
"""

from __future__ import annotations

import copy
import json

import pytest
from matplotlib.figure import Figure
from pydantic import ValidationError

from edgewise.bench.commands import _summary
from edgewise.bench.environment import EMULATED_MARKER_ENV, emulation_note, environment
from edgewise.bench.report import markdown, suggest_order, write_report
from edgewise.bench.schema import validate_report

from .test_report import published

NOTE = "emulated under qemu-user: the device's architecture and software, not its speed"
TIMING_COLUMNS = ("cold load ms", "p50 / p90 / p99 ms", "utt/s b1", "CPU s / audio s", "GFLOP/s")
TIMING_COLUMNS += ("% of ceiling", "vs ONNX fp32")
UNTIMED_COLUMNS = ("artifact", "runtime", "precision", "size", "peak RSS MiB (baseline)")


def as_measured_on(note: str | None) -> dict:
    """The published report, as a machine whose marker says ``note`` (None: real hardware) wrote it."""
    report = copy.deepcopy(published())
    report["emulated"] = report["environment"]["emulated"] = note
    report.pop("suggested_order", None)
    report["notes"], report["plots"] = [], []
    return report


def header_cells(md: str) -> list[str]:
    header = next(line for line in md.splitlines() if line.startswith("| artifact |"))
    return [c.strip() for c in header.strip("|").split("|")]


# --- the device decides, from its marker file ----------------------------------------------------


def test_the_marker_file_is_what_makes_a_machine_emulated(tmp_path, monkeypatch):
    marker = tmp_path / "edgewise-emulated"
    monkeypatch.setenv(EMULATED_MARKER_ENV, str(marker))
    assert emulation_note() is None  # no marker: real hardware
    marker.write_text(f"\n{NOTE}\nsecond line ignored\n")
    assert emulation_note() == NOTE
    assert environment(1, with_torch=False)["emulated"] == NOTE
    marker.write_text("\n")
    assert emulation_note() == f"emulated ({marker} is empty)"  # still a board, never hardware


# --- bench.json, bench.md, plots -----------------------------------------------------------------


@pytest.fixture
def plotted_titles(monkeypatch):
    """Every title, suptitle and axis label of each figure the report saves (matplotlib draws for
    real; savefig is wrapped only to read the figure's text)."""
    seen: list[str] = []
    save = Figure.savefig

    def spy(fig, *args, **kwargs):
        texts = [fig._suptitle.get_text()] if fig._suptitle is not None else []
        for ax in fig.axes:
            texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        seen.append("\n".join(t for t in texts if t))
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return seen


def test_an_emulated_report_labels_every_timing_and_only_timings(tmp_path, plotted_titles):
    path = write_report(as_measured_on(NOTE), tmp_path)
    report = json.loads(path.read_text())
    assert report["emulated"] == NOTE and report["environment"]["emulated"] == NOTE
    md = (tmp_path / "bench.md").read_text()
    assert f"> **EMULATED: {NOTE}. Every timing in this report" in md.split("## Environment")[0]
    assert "memory, sizes and parity still hold" in md
    cells = header_cells(md)
    for column in TIMING_COLUMNS:
        assert any(c.startswith(column) and c.endswith("(emulated)") for c in cells), (column, cells)
    for column in UNTIMED_COLUMNS:
        assert column in cells  # exactly, unlabelled: memory and size still hold under emulation
    assert "## Ceiling (measured in this run, emulated)" in md
    assert f"- Emulated: {NOTE}" in md
    # the plots are all timings: each one says so in its title
    assert len(plotted_titles) == len(report["plots"]) == 3
    for texts in plotted_titles:
        assert "EMULATED: timings under emulation, not the device's speed" in texts, texts


def test_a_real_device_report_carries_no_emulated_label(tmp_path, plotted_titles):
    path = write_report(as_measured_on(None), tmp_path)
    report = json.loads(path.read_text())
    md = (tmp_path / "bench.md").read_text()
    assert report["emulated"] is None and "(emulated)" not in md and "EMULATED" not in md
    assert "- Emulated: no (real hardware" in md
    assert plotted_titles and not any("EMULATED" in t or "(emulated)" in t for t in plotted_titles)
    assert report["suggested_order"]["runtimes"]  # a real device's timings do order the profile


def test_no_profile_order_is_suggested_from_emulated_timings_and_the_report_says_why(tmp_path):
    report = as_measured_on(NOTE)
    report["device"]["name"] = "rpi5"
    assert suggest_order(report) is None
    path = write_report(report, tmp_path, plots=False)
    assert json.loads(path.read_text())["suggested_order"] is None
    md = (tmp_path / "bench.md").read_text()
    section = md.split("## Suggested device-profile order", 1)[1]
    assert "No device-profile order is suggested: the timings were measured under emulation" in section
    assert "runtimes:" not in md and "Suggested `runtimes` order" not in md


def test_the_schema_keeps_the_label_consistent():
    report = as_measured_on(NOTE)
    validate_report(report)
    report["environment"]["emulated"] = (
        None  # a device that says it is not emulated, in a report that says it is
    )
    with pytest.raises(ValidationError, match="environment.emulated"):
        validate_report(report)
    report = as_measured_on(NOTE)
    report["suggested_order"] = suggest_order(as_measured_on(None))
    with pytest.raises(ValidationError, match="suggested_order must be null in an emulated report"):
        validate_report(report)


def test_the_console_summary_says_emulated_on_every_timing_line(tmp_path, capsys):
    report = as_measured_on(NOTE)
    _summary(report, tmp_path / "bench.json")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"EMULATED: {NOTE}. Every timing")
    timed = [ln for ln in lines if " p50 " in ln]
    assert len(timed) == sum(r["status"] == "ok" for r in report["rows"]) > 0
    assert all(": (emulated timings) p50" in ln for ln in timed), timed
    assert any(ln.startswith("No device-profile order is suggested") for ln in lines)


def test_the_console_summary_of_real_hardware_has_no_label(tmp_path, capsys):
    _summary(as_measured_on(None), tmp_path / "bench.json")
    out = capsys.readouterr().out
    assert "emulated" not in out.lower() and ": p50 " in out


def test_a_slow_ceiling_keeps_three_figures_instead_of_rounding_to_zero():
    """Under qemu the fp32 GEMM ceiling was 0.216 GFLOP/s: bench.md printed it as "0 GFLOP/s"."""
    report = as_measured_on(NOTE)
    fig = report["ceiling"]["fp32"]
    fig.update(value=0.216, by_size={"256": 0.216}, by_phase={"start": 0.0856, "end": 0.216})
    md = markdown(report)
    assert "fp32 GEMM: **0.216 GFLOP/s**" in md and "start 0.0856, end 0.216" in md
