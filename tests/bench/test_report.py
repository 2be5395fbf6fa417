"""The benchmark of a real bundle: every figure present, consistent with the manifest and the ceiling."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edgewise.bench.report import markdown, suggest_order
from edgewise.bench.schema import Row, validate_report
from edgewise.bundle import load_bundle
from edgewise.devices import load_profile

from .conftest import QUICK, bench, rows_by_name

PUBLISHED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "bench" / "bench.json"

ARTIFACT_ROWS = ("onnx fp32", "onnx int8 (dynamic)", "tflite fp32", "tflite int8 (dynamic)")


def test_the_report_validates_against_the_schema(full_bench):
    rc, report, out = full_bench
    assert rc == 0
    parsed = validate_report(report)
    assert parsed.schema_ == 1 and report["schema"] == 1
    assert report["bundle"]["verified"] and report["bundle"]["flops"]["frames"] == 301
    env = report["environment"]
    assert env["threads"] == 2 and env["cpu_model"] and env["python"]
    assert env["runtimes"]["onnxruntime"] and env["runtimes"]["ai-edge-litert"]
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]
    assert (
        env["input"]["kind"] == "fixed" and env["input"]["seconds"] == 3.0 and env["input"]["frames"] == 301
    )
    # written through the schema: every row carries every field, null where not measured
    assert all(set(row) == set(Row.model_fields) for row in report["rows"])
    assert json.loads((out / "bench.json").read_text())["rows"][0]["name"] == report["rows"][0]["name"]


def test_every_artifact_has_a_row_with_positive_figures_and_the_manifest_size(full_bench, bench_bundle):
    _, report, _ = full_bench
    rows = rows_by_name(report)
    with load_bundle(bench_bundle) as bundle:
        arts = {a.path: a for a in bundle.artifacts("classifier")}
    assert sorted(r["artifact"] for r in report["rows"]) == sorted(arts)
    assert set(rows) == set(ARTIFACT_ROWS)
    for row in report["rows"]:
        assert row["status"] == "ok", row
        assert row["size_bytes"] == arts[row["artifact"]].size_bytes
        lat = row["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] and lat["runs"] == 21  # 3 rounds x 7
        cold = row["cold"]
        assert (
            cold["runs"] == 2
            and len(cold["cold_ms_all"]) == 2
            and cold["cold_ms"] > 0
            and cold["load_ms"] > 0
        )
        assert [t["batch"] for t in row["throughput"]] == [1, 4, 16]
        assert all(t["utterances_per_s"] > 0 for t in row["throughput"])
        assert 0 < row["cpu"]["cpu_s_per_audio_s"] < 1  # a tiny model is far faster than real time
        assert row["parity_passed"] is True


def test_memory_is_a_fresh_process_against_a_runtime_only_baseline(full_bench):
    _, report, _ = full_bench
    for row in report["rows"]:
        mem = row["memory"]
        assert mem["source"] == "/proc/self/status VmHWM"
        assert 0 < mem["baseline_rss_mb"] < mem["peak_rss_mb"] <= mem["peak_rss_after_batches_mb"]
        assert mem["model_rss_mb"] == pytest.approx(mem["peak_rss_mb"] - mem["baseline_rss_mb"], abs=0.02)


def test_the_ceiling_is_measured_and_the_fraction_is_achieved_over_ceiling(full_bench):
    _, report, _ = full_bench
    ceiling = report["ceiling"]
    assert (
        ceiling["fp32"]["status"] == "ok"
        and ceiling["fp32"]["value"] > 0
        and ceiling["fp32"]["unit"] == "GFLOP/s"
    )
    assert (
        ceiling["int8"]["status"] == "ok"
        and ceiling["int8"]["value"] > 0
        and ceiling["int8"]["unit"] == "GOP/s"
    )
    assert set(ceiling["fp32"]["by_phase"]) == {"start", "end"} and set(ceiling["fp32"]["by_size"]) == {
        "512",
        "1024",
    }
    assert ceiling["fp32"]["value"] == max(ceiling["fp32"]["by_phase"].values())
    assert "OPENBLAS_NUM_THREADS" in ceiling["fp32"]["thread_control"]
    flops = report["bundle"]["flops"]["flops"]
    for row in report["rows"]:
        f = row["flops"]
        kind = "int8" if row["precision"] == "int8" else "fp32"
        assert f["ceiling"] == kind and f["ceiling_value"] == pytest.approx(ceiling[kind]["value"], abs=1e-3)
        assert f["per_input"] == flops  # exactly 3 s: the manifest's own figure
        assert f["achieved_gflops"] > 0
        assert f["fraction_of_ceiling"] == pytest.approx(f["achieved_gflops"] / f["ceiling_value"], rel=1e-12)
        # with a fixed input, achieved FLOP/s is the input's FLOPs over the median latency
        assert f["achieved_gflops"] == pytest.approx(flops / (row["latency_ms"]["p50"] / 1e3) / 1e9, rel=0.02)


def test_ratios_are_against_onnx_fp32_and_tflite_batches_are_sequential(full_bench):
    _, report, _ = full_bench
    rows = rows_by_name(report)
    assert rows["onnx fp32"]["ratio_vs_onnx_fp32"] == 1.0
    assert all(r["ratio_vs_onnx_fp32"] > 0 for r in report["rows"])
    for name in ("tflite fp32", "tflite int8 (dynamic)"):
        assert {t["mode"] for t in rows[name]["throughput"]} == {"sequential"}
        assert any("batch 1 only" in n for n in rows[name]["notes"])
        assert "window" in rows[name]["flops"]["note"]
    assert {t["mode"] for t in rows["onnx fp32"]["throughput"]} == {"batched"}


def test_the_markdown_has_the_table_and_the_plots_exist(full_bench):
    _, report, out = full_bench
    md = (out / "bench.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| artifact |"))
    for column in (
        "runtime",
        "precision",
        "size",
        "cold load ms",
        "p50 / p90 / p99 ms",
        "utt/s b1",
        "utt/s b4",
        "utt/s b16",
        "peak RSS MiB (baseline)",
        "CPU s / audio s",
        "GFLOP/s",
        "% of ceiling",
        "vs ONNX fp32",
    ):
        assert f"| {column} |" in header
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(ARTIFACT_ROWS)
    for name in ARTIFACT_ROWS:
        assert any(line.startswith(f"| {name} |") for line in table)
    assert "fp32 GEMM: **" in md and "int8 GEMM: **" in md and "- CPU: " in md
    assert report["plots"] and all((out / p).stat().st_size > 1000 for p in report["plots"])


def test_real_utterance_lengths_with_a_corpus(bench_bundle, edge_corpus, tmp_path):
    rc, report = bench(
        bench_bundle,
        tmp_path,
        *QUICK,
        "--formats",
        "onnx",
        "--precisions",
        "fp32",
        "--corpus",
        edge_corpus,
        "--split",
        "test",
        "--limit",
        "5",
    )
    assert rc == 0
    inp = report["environment"]["input"]
    assert inp["kind"] == "corpus" and inp["utterances"] == 5 and inp["split"] == "test"
    assert 0.5 < inp["length_s"]["min"] <= inp["length_s"]["p50"] <= inp["length_s"]["max"] < 1.3
    row = report["rows"][0]
    assert (
        row["status"] == "ok"
        and row["flops"]["achieved_gflops"] > 0
        and "scaled linearly" in row["flops"]["note"]
    )


# --- the suggested device-profile order -------------------------------------------------------------


def test_the_report_suggests_a_profile_order_from_its_measured_latencies(full_bench):
    _, report, out = full_bench
    sug = report["suggested_order"]
    assert sug["by"].startswith("warm latency relative to ONNX fp32")
    ranked = sug["runtimes"]
    assert len(ranked) == len(ARTIFACT_ROWS)
    ratios = [r["ratio_vs_onnx_fp32"] for r in ranked]
    assert ratios == sorted(ratios)  # fastest first
    rows = rows_by_name(report)
    for r in ranked:
        name = f"{r['format']} {r['precision']}" + (f" ({r['quant']})" if r["quant"] else "")
        assert r["p50_ms"] == rows[name]["latency_ms"]["p50"]
    md = (out / "bench.md").read_text()
    assert "## Suggested device-profile order" in md and "Suggested `runtimes` order, fastest first" in md
    first = ranked[0]
    assert f"runtimes:\n  - {{format: {first['format']}, precision: {first['precision']}" in md


def published() -> dict:
    return json.loads(PUBLISHED.read_text())


def test_the_published_benchmark_ranks_fp32_onnx_first_and_dynamic_int8_onnx_behind_it():
    """benchmarks/results/bench: dynamic int8 ONNX measured 1.71x slower than fp32 on the reference
    machine, so it must not be suggested ahead of fp32."""
    sug = suggest_order(published())
    order = [(r["format"], r["precision"], r["quant"]) for r in sug["runtimes"]]
    assert order[0] == ("onnx", "fp32", None)
    assert order.index(("onnx", "int8", "dynamic")) > order.index(("tflite", "int8", "dynamic"))
    assert [r["ratio_vs_onnx_fp32"] for r in sug["runtimes"]] == sorted(
        r["ratio_vs_onnx_fp32"] for r in sug["runtimes"]
    )
    assert {"pytorch merged: not a bundle artifact", "pytorch plain: not a bundle artifact"} <= set(
        sug["left_out"]
    )


def test_the_shipped_x86_profile_follows_the_published_measurement():
    """The rule for profiles (README, Device profiles): x86-local lists its runtimes in the order
    `edgewise bench` measured on the reference machine."""
    report = published()
    report["device"]["name"] = "x86-local"
    sug = suggest_order(report)
    assert sug["profile"] == "x86-local" and sug["profile_matches"] is True, sug
    assert sug["profile_order"] == [c.describe() for c in load_profile("x86-local").runtimes]


def test_a_profile_in_another_order_is_told_to_reorder(tmp_path):
    old = tmp_path / "old-x86.yaml"
    old.write_text(
        "name: old-x86\ndescription: int8 first\narch: x86_64\nruntimes:\n"
        "  - {format: onnx, precision: int8, quant: dynamic}\n  - {format: onnx, precision: fp32}\n"
        "threads: 2\nmemory_budget_mb: 256\ninstall_root: /x\n"
    )
    report = published()
    report["device"]["name"] = str(old)
    report["suggested_order"] = suggest_order(report)
    sug = report["suggested_order"]
    assert sug["profile_order"] == ["onnx int8 (dynamic)", "onnx fp32"] and sug["profile_matches"] is False
    validate_report(report)
    md = markdown(report)
    assert (
        "Profile `old-x86` lists the measured choices as onnx int8 (dynamic), onnx fp32: a different order"
        in md
    )


def test_rows_that_did_not_run_or_failed_their_gate_are_not_suggested():
    report = copy.deepcopy(published())
    rows = rows_by_name(report)
    rows["onnx fp32"]["parity_passed"] = False
    rows["tflite fp32"].update(status="failed", reason="load error", latency_ms=None)
    for row in report["rows"]:
        row["ratio_vs_onnx_fp32"] = None  # no fp32 reference: ranked by warm p50 instead
    sug = suggest_order(report)
    names = [
        f"{r['format']} {r['precision']}" + (f" ({r['quant']})" if r["quant"] else "")
        for r in sug["runtimes"]
    ]
    assert "onnx fp32" not in names and "tflite fp32" not in names
    assert (
        "onnx fp32: failed its parity gate at export" in sug["left_out"]
        and "tflite fp32: failed" in sug["left_out"]
    )
    assert sug["by"] == "warm p50 latency"
    p50 = [r["p50_ms"] for r in sug["runtimes"]]
    assert p50 == sorted(p50)
    report["rows"] = []
    assert suggest_order(report) is None
