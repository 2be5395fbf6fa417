"""Write a benchmark report: bench.json (validated), bench.md and PNG plots (matplotlib, optional)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from edgewise.bench.schema import validate_report
from edgewise.fsutil import write_text_atomic

log = logging.getLogger(__name__)

JSON_NAME, MD_NAME = "bench.json", "bench.md"
PLOT_NAMES = ("bench_latency.png", "bench_throughput.png", "bench_ceiling.png")
# what every timing of an emulated report carries (memory, sizes and parity do not: they still hold)
EMULATED = "(emulated)"


def timing(label: str, report: dict[str, Any]) -> str:
    """``label``, marked ``(emulated)`` when the report was measured on an emulated board."""
    return f"{label} {EMULATED}" if report.get("emulated") else label


def emulated_banner(report: dict[str, Any]) -> str | None:
    """One sentence for the top of an emulated report (``None`` for real hardware)."""
    note = report.get("emulated")
    if not note:
        return None
    return (
        f"EMULATED: {note}. Every timing in this report (latency, cold load, throughput, CPU time, "
        "FLOP/s, ceiling, ratios) was measured under emulation and says nothing about the real "
        "device's speed; memory, sizes and parity still hold."
    )


def not_suggested(report: dict[str, Any]) -> str:
    """Why an emulated report suggests no device-profile order."""
    return (
        "No device-profile order is suggested: the timings were measured under emulation "
        f"({report.get('emulated')}), which ranks runtimes by how well the emulator translates them, "
        "not by how fast they run on the device; run `edgewise bench --host` on the real device to order "
        "its profile's runtimes"
    )


def _num(value: float | None, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.0f} KiB" if n < 2**20 else f"{n / 2**20:.1f} MiB"


def _thr(row: dict[str, Any], batch: int) -> str:
    for t in row.get("throughput") or []:
        if t["batch"] == batch:
            return f"{t['utterances_per_s']:.0f}" + (" (seq)" if t["mode"] == "sequential" else "")
    return "-"


def table(report: dict[str, Any]) -> list[str]:
    batches = (report.get("settings") or {}).get("batches") or [1, 4, 16]

    def t(label: str) -> str:
        return timing(label, report)

    head = ["artifact", "runtime", "precision", "size", t("cold load ms"), t("p50 / p90 / p99 ms")]
    head += [t(f"utt/s b{b}") for b in batches]
    head += ["peak RSS MiB (baseline)", t("CPU s / audio s"), t("GFLOP/s"), t("% of ceiling")]
    head += [t("vs ONNX fp32")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        name = row["name"] + ("" if row.get("parity_passed") is not False else " (parity FAILED)")
        if row["status"] != "ok":
            cells = [name, row.get("runtime") or "-", row["precision"], _size(row.get("size_bytes"))]
            cells.append(f"**{row['status']}**: {row.get('reason') or ''}")
            cells += [""] * (len(head) - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
            continue
        lat, mem, flops = row["latency_ms"], row["memory"], row.get("flops") or {}
        frac = flops.get("fraction_of_ceiling")
        pct = "-" if frac is None else f"{100 * frac:.1f}% of {flops.get('ceiling')}"
        gflops = flops.get("achieved_gflops")
        cells = [
            name,
            row.get("runtime") or "-",
            row["precision"] + (f" {row['quant']}" if row.get("quant") else ""),
            _size(row.get("size_bytes")),
            _num(row["cold"]["cold_ms"], ".1f"),
            f"{lat['p50']:.2f} / {lat['p90']:.2f} / {lat['p99']:.2f}",
            *[_thr(row, b) for b in batches],
            f"{_num(mem.get('peak_rss_mb'), '.0f')} ({_num(mem.get('baseline_rss_mb'), '.0f')})",
            _num(row["cpu"]["cpu_s_per_audio_s"], ".3g"),
            "flops unknown" if gflops is None else f"{gflops:.2f}",
            pct,
            _num(row.get("ratio_vs_onnx_fp32"), ".2f", "x"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _choice(fmt: str, precision: str, quant: str | None) -> str:
    """A runtime choice as the device profiles and the runtime's logs name it: ``onnx int8 (dynamic)``."""
    return f"{fmt} {precision}" + (f" ({quant})" if quant else "")


def suggest_order(report: dict[str, Any]) -> dict[str, Any] | None:
    """The device-profile ``runtimes`` order this benchmark measured: fastest first.

    Ranked: artifact rows that ran and passed their export parity gate (the runtime never runs the
    others), by the median per-round latency ratio against ONNX fp32 when every ranked row has one
    (interleaved rounds: robust to a busy machine), else by warm p50. When the report names a device
    profile, its measured choices are listed in its own order and compared.

    An emulated report suggests nothing (``None``): its timings are the emulator's, not the device's.
    """
    if report.get("emulated"):
        return None
    ranked, left_out = [], []
    for row in report.get("rows") or []:
        if row["kind"] != "artifact":
            left_out.append(f"{row['name']}: not a bundle artifact")
        elif row["status"] != "ok" or not row.get("latency_ms"):
            left_out.append(f"{row['name']}: {row['status']}")
        elif row.get("parity_passed") is False:
            left_out.append(f"{row['name']}: failed its parity gate at export")
        else:
            ranked.append(row)
    if not ranked:
        return None
    by_ratio = all(r.get("ratio_vs_onnx_fp32") is not None for r in ranked)
    if by_ratio:
        ranked.sort(key=lambda r: (r["ratio_vs_onnx_fp32"], r["latency_ms"]["p50"]))
    else:
        ranked.sort(key=lambda r: r["latency_ms"]["p50"])
    runtimes, seen = [], set()
    for r in ranked:
        key = (r["format"], r["precision"], r.get("quant"))
        if key in seen:  # two artifacts of one choice: the runtime takes the first, rank the faster
            continue
        seen.add(key)
        runtimes.append(
            {
                "format": r["format"],
                "precision": r["precision"],
                "quant": r.get("quant"),
                "p50_ms": r["latency_ms"]["p50"],
                "ratio_vs_onnx_fp32": r.get("ratio_vs_onnx_fp32"),
            }
        )
    out: dict[str, Any] = {
        "by": "warm latency relative to ONNX fp32 (median of per-round ratios)"
        if by_ratio
        else "warm p50 latency",
        "runtimes": runtimes,
        "left_out": left_out,
        "profile": None,
        "profile_order": None,
        "profile_matches": None,
    }
    name = (report.get("device") or {}).get("name")
    if name:
        from edgewise.devices import load_profile
        from edgewise.errors import ConfigError

        try:
            profile = load_profile(name)
        except ConfigError as exc:
            log.warning("no profile to compare the suggested order with: %s", exc)
            return out
        suggested = [_choice(r["format"], r["precision"], r["quant"]) for r in runtimes]
        mine = [c.describe() for c in profile.runtimes if c.describe() in suggested]
        out.update(
            profile=profile.name,
            profile_order=mine,
            profile_matches=mine == [c for c in suggested if c in mine],
        )
    return out


def suggestion_lines(report: dict[str, Any]) -> list[str]:
    """bench.md's section on the profile order: one line, the profile's verdict, a YAML block."""
    sug = report.get("suggested_order")
    if report.get("emulated") and report.get("rows"):
        return ["", "## Suggested device-profile order", "", not_suggested(report) + "."]
    if not sug:
        return []
    ranked = [
        _choice(r["format"], r["precision"], r["quant"])
        + (f" ({r['ratio_vs_onnx_fp32']:.2f}x)" if r.get("ratio_vs_onnx_fp32") is not None else "")
        + f" {r['p50_ms']:.2f} ms"
        for r in sug["runtimes"]
    ]
    lines = [
        "",
        "## Suggested device-profile order",
        "",
        f"Suggested `runtimes` order, fastest first by {sug['by']}: {', '.join(ranked)}.",
    ]
    if sug.get("left_out"):
        lines[-1] += f" Not ranked: {'; '.join(sug['left_out'])}."
    if sug.get("profile"):
        order = ", ".join(sug["profile_order"] or []) or "none of these"
        verdict = (
            "the same order"
            if sug["profile_matches"]
            else "a different order: reorder its `runtimes` to follow the measurement (README, Device profiles)"
        )
        lines += ["", f"Profile `{sug['profile']}` lists the measured choices as {order}: {verdict}."]
    yaml_lines = [
        "  - {"
        + f"format: {r['format']}, precision: {r['precision']}"
        + (f", quant: {r['quant']}" if r.get("quant") else "")
        + "}"
        for r in sug["runtimes"]
    ]
    return [*lines, "", "```yaml", "runtimes:", *yaml_lines, "```"]


def _rate(value: float) -> str:
    """GFLOP/s or GOP/s: whole numbers, but three figures below 10 (an emulated board's 0.26, not 0)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.3g}"


def _ceiling_line(name: str, fig: dict[str, Any]) -> str:
    if fig.get("status") != "ok":
        return f"- {name}: unavailable ({fig.get('reason')})"
    sizes = ", ".join(f"{n}: {_rate(v)}" for n, v in fig.get("by_size", {}).items())
    phases = ", ".join(f"{p} {_rate(v)}" for p, v in fig.get("by_phase", {}).items())
    return (
        f"- {name}: **{_rate(fig['value'])} {fig['unit']}** (best of {fig.get('repeats')} per size, measured before "
        f"and after the rows: {phases}; by size {sizes}); "
        f"{fig.get('method')}; threads: {fig.get('thread_control')}"
    )


def markdown(report: dict[str, Any]) -> str:
    b, dev = report["bundle"], report["device"]
    title = (
        f"# edgewise bench: {b.get('name') or b['path']} {b.get('version') or ''} on {dev['label']}".rstrip()
    )
    lines = [
        title,
        "",
        f"Command: `{report['command']}`  ",
        f"Written {report['created']} by edgewise {report['edgewise_version']}.",
    ]
    banner = emulated_banner(report)
    if banner:
        lines += ["", f"> **{banner}**"]
    if not b["verified"]:
        lines += ["", f"**The bundle does not verify; nothing was benchmarked:** {b.get('error')}", ""]
        return "\n".join(lines) + "\n"
    env, s = report["environment"], report["settings"]
    inp = env["input"]
    runtimes = ", ".join(f"{k} {v}" for k, v in env["runtimes"].items() if v) or "none"
    if inp["kind"] == "fixed":
        length = f"a fixed {inp['seconds']:g} s input ({inp['frames']} frames x {inp['n_mels']} mels)"
    else:
        ls = inp["length_s"]
        length = (
            f"{inp['utterances']} utterances of {inp['corpus']} ({inp['split']}), {ls['min']:.2f}-{ls['max']:.2f} s "
            f"(median {ls['p50']:.2f} s); cold load, throughput and FLOPs use a fixed {inp['seconds']:g} s input"
        )
    flops = b.get("flops")
    lines += [
        "",
        "## Environment",
        "",
        f"- CPU: {env['cpu_model']} ({env['machine']}), {env['cores_logical']} logical cores, "
        f"{env['cores_usable']} usable; **{env['threads']} threads** for every row and the ceiling",
        f"- OS: {env['os']} ({env['kernel']}); Python {env['python']}",
        f"- Emulated: {report['emulated']} (from the device's /etc/edgewise-emulated)"
        if report.get("emulated")
        else "- Emulated: no (real hardware: the device has no /etc/edgewise-emulated)",
        f"- Runtimes: {runtimes}; onnxruntime providers: {', '.join(env['onnxruntime_providers']) or '-'}",
        f"- Load average (1/5/15 min): start {env.get('load_average_start')}, end {env.get('load_average_end')}",
        f"- Input: {length}",
        f"- Model FLOPs: {flops['flops'] / 1e6:.1f} MFLOP per {flops['seconds']:g} s ({flops.get('counted', '')})"
        if flops
        else "- Model FLOPs: unknown (the manifest has no extra.flops)",
        f"- Method: warm latency {s['runs']} runs after {s['warmup']} warm-up runs, batch 1, in {s['rounds']} "
        f"interleaved rounds (rotating order); throughput: {s['block_seconds']:g} s blocks per row and round, "
        f"median over rounds; cold load: median of {s['cold_runs']} fresh processes (load + first inference); "
        "ratios: median of per-round ratios",
        "",
        "## Ceiling (measured in this run" + (", emulated)" if report.get("emulated") else ")"),
        "",
        _ceiling_line("fp32 GEMM", report["ceiling"]["fp32"]),
        _ceiling_line("int8 GEMM", report["ceiling"]["int8"]),
        "",
        "## Results",
        "",
        *table(report),
        "",
        "Peak RSS: VmHWM of a fresh process that loaded the model and ran it at batch 1; in brackets, a "
        "process that imports the same runtime and loads nothing. `(seq)`: a fixed-window model runs a "
        "batch one utterance at a time. % of ceiling: achieved FLOP/s over the fp32 GEMM ceiling (int8 "
        "rows: the int8 one). PyTorch rows: size = 4 bytes x parameters.",
        *suggestion_lines(report),
    ]
    notes = [f"- {r['name']}: {n}" for r in report["rows"] for n in r.get("notes") or []]
    notes += [
        f"- {r['name']}: FLOPs: {r['flops']['note']}"
        for r in report["rows"]
        if (r.get("flops") or {}).get("note")
    ]
    notes += [f"- {n}" for n in report.get("notes") or []]
    if notes:
        lines += ["", "## Notes", "", *notes]
    if report.get("plots"):
        lines += ["", *[f"![{p}]({p})" for p in report["plots"]]]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], out: Path) -> list[str]:
    """The PNG plots; returns their names (empty, with a note, when matplotlib is not installed)."""
    if importlib.util.find_spec("matplotlib") is None:
        report["notes"].append("plots skipped: matplotlib is not installed")
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["status"] == "ok"]
    if not rows:
        return []
    names = [r["name"] for r in rows]
    label = report["device"]["label"]
    threads = report["environment"]["threads"]
    # every plot is timings: an emulated report says so in each title
    emu = "\nEMULATED: timings under emulation, not the device's speed" if report.get("emulated") else ""

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.5 * len(rows) + 2))
    ys = range(len(rows))
    p50 = [r["latency_ms"]["p50"] for r in rows]
    ax1.barh(ys, p50, color="tab:blue", label="p50")
    ax1.errorbar([r["latency_ms"]["p90"] for r in rows], ys, fmt="|", color="k", markersize=10, label="p90")
    ax1.errorbar([r["latency_ms"]["p99"] for r in rows], ys, fmt="x", color="tab:red", label="p99")
    ax1.set_xscale("log")
    ax1.set_yticks(list(ys), names)
    ax1.invert_yaxis()
    ax1.set_xlabel(timing(f"warm latency, ms, log scale (batch 1, {threads} threads)", report))
    ax1.legend(fontsize=7)
    ax2.barh(ys, [r["cold"]["cold_ms"] for r in rows], color="tab:gray")
    ax2.set_yticks(list(ys), [])
    ax2.invert_yaxis()
    ax2.set_xlabel(timing("cold load ms (fresh process: load + first inference)", report))
    fig.suptitle(f"edgewise bench on {label}: latency{emu}")
    fig.tight_layout()
    fig.savefig(out / PLOT_NAMES[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        pts = r["throughput"]
        style = "--" if any(t["mode"] == "sequential" for t in pts) else "-"
        ax.plot(
            [t["batch"] for t in pts],
            [t["utterances_per_s"] for t in pts],
            style,
            marker="o",
            label=r["name"],
        )
    ax.set_xscale("log", base=2)
    batches = sorted({t["batch"] for r in rows for t in r["throughput"]})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size (dashed: sequential, fixed-window model)")
    ax.set_ylabel(timing("utterances / s", report))
    ax.set_title(f"throughput on {label}{emu}", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / PLOT_NAMES[1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 2))
    frac = [100 * ((r.get("flops") or {}).get("fraction_of_ceiling") or 0) for r in rows]
    colors = ["tab:orange" if r["precision"] == "int8" else "tab:blue" for r in rows]
    ax.barh(list(ys), frac, color=colors)
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlabel(timing("% of the GEMM ceiling (blue: fp32 ceiling, orange: int8 ceiling)", report))
    ax.set_title(f"compute efficiency on {label}{emu}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / PLOT_NAMES[2], dpi=110)
    plt.close(fig)
    return list(PLOT_NAMES)


def write_report(report: dict[str, Any], out: Path, plots: bool = True) -> Path:
    """bench.json (validated first), the plots and bench.md into ``out``; returns bench.json's path."""
    out.mkdir(parents=True, exist_ok=True)
    if plots and report["bundle"]["verified"] and report.get("environment"):
        try:
            report["plots"] = plot(report, out)
        except Exception as exc:  # a plot must never cost the report
            log.warning("plots failed: %s", exc)
            report["notes"].append(f"plots failed: {exc}")
    elif not plots:
        report["notes"].append("plots not drawn (--no-plots)")
    report["suggested_order"] = suggest_order(report)
    # through the schema: validated, and every field present (null where not measured), in schema order
    report = validate_report(report).model_dump(mode="json", by_alias=True)
    path = out / JSON_NAME
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / MD_NAME, markdown(report))
    return path
