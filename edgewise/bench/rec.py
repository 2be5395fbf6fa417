"""``edgewise bench`` for a rec bundle: recommendation latency of each precision, against PyTorch.

Engines, each in its own worker process (:class:`edgewise.bench.workers.WorkerProcess` running
``python -m edgewise.bench.rec``, the protocol of :mod:`edgewise.bench.worker`), so no engine's
thread pool or memory is mixed with another's and torch never enters an ONNX engine's process:

- ``onnx fp32``, ``onnx int8``: the torch-free :class:`~edgewise.edge.pipelines.rec.RecPipeline`
  on the bundle's two graphs of that precision (opened directly, so an artifact that failed its
  gate is measured too; the row says so): one request per history, ``recommend(history, k, beam)``,
  timed whole (item ids in, item ids out: context, the beam search's decoder steps, the trie);
- ``pytorch`` (only with ``--run RUN`` and torch installed): the run's merged model and PyTorch's
  :func:`~edgewise.cloud.models.rec.beam.beam_search` on the same padded histories, batch 1.

Histories: with ``--run``, the validation users of the run's data set (leave-last-out: every item
but the last two), so each row also reports HR@10 and NDCG@10 on the validation targets and its
top-10 agreement with PyTorch; without it, seeded random histories from the bundle's catalogue.
Requests (``--runs``, default 200; with a run at most its validation users) are interleaved round
by round (``--rounds``: every engine takes a block of users before any takes the next), after
``--warmup`` requests each (default 5). Latency is per request, top-10 with beam 20: p50, p90, p99.

Writes OUT/bench.json and OUT/bench.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ENGINES = ("onnx-fp32", "onnx-int8", "pytorch")
WARMUP = 5  # requests per engine before timing


def _latency(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms, dtype=np.float64)
    return {q: round(float(np.percentile(arr, p)), 4) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))} | {
        "mean": round(float(arr.mean()), 4)
    }


# -- the worker side ----------------------------------------------------------------------------


class RecWorker:
    """One engine in a worker process: ``op_load`` it, then ``op_recommend`` blocks of histories."""

    def __init__(self) -> None:
        self.run_one: Any = None

    def op_load(self, engine: str, bundle: str, threads: int, run: str | None = None) -> dict[str, Any]:
        from edgewise.bench.worker import memory

        t0 = time.perf_counter()
        if engine == "pytorch":
            info = self._load_torch(bundle, run, threads)
        else:
            info = self._load_onnx(bundle, engine.split("-", 1)[1], threads)
        return {"load_s": time.perf_counter() - t0, "memory": memory(), **info}

    def _load_onnx(self, bundle_path: str, precision: str, threads: int) -> dict[str, Any]:
        from edgewise.edge.pipelines.rec import RecPipeline

        pipe, arts = RecPipeline.open_precision(bundle_path, precision, threads)

        def run_one(history: list[str], k: int, beam: int) -> tuple[float, list[str]]:
            result = pipe.recommend(history, k=k, beam=beam)
            return result["timings"]["total_ms"], result["items"]

        self.run_one = run_one
        return {
            "size_bytes": sum(a.size_bytes for a in arts.values()),
            "artifacts": [a.path for a in arts.values()],
            "export_gate_passed": all(a.parity.get("passed") is not False for a in arts.values()),
            "backend": pipe.decoder.describe(),
        }

    def _load_torch(self, bundle_path: str, run: str | None, threads: int) -> dict[str, Any]:
        import torch

        from edgewise.bundle import load_bundle
        from edgewise.cloud.models.rec.beam import TorchTrie, beam_search
        from edgewise.cloud.train.rec_job import load_rec_run
        from edgewise.edge.pipelines.rec import open_tables
        from edgewise.rec_ids import pad_left

        if run is None:
            raise ValueError("the pytorch engine needs the run (--run RUN)")
        torch.set_num_threads(threads)
        with load_bundle(bundle_path) as bundle:
            settings, tables = open_tables(bundle)
        model, _ = load_rec_run(run)
        trie = TorchTrie.from_trie(tables.trie)

        def run_one(history: list[str], k: int, beam: int) -> tuple[float, list[str]]:
            t0 = time.perf_counter()
            known = [tables.index[x] for x in history if x in tables.index]
            padded = torch.from_numpy(pad_left([known], settings.max_len))
            found = beam_search(model, padded, trie, beam)
            items = [tables.item_ids[int(i)] for i in found.items[0] if i >= 0][:k]
            return (time.perf_counter() - t0) * 1000, items

        self.run_one = run_one
        weights = Path(run) / "model.safetensors"
        return {
            "size_bytes": weights.stat().st_size,
            "artifacts": [str(weights)],
            "backend": f"torch {torch.__version__} eager, {threads} threads",
        }

    def op_recommend(self, histories: list[list[str]], k: int, beam: int) -> dict[str, Any]:
        ms, items = [], []
        for history in histories:
            t, found = self.run_one(history, k, beam)
            ms.append(t)
            items.append(found)
        return {"ms": ms, "items": items}

    def op_memory(self) -> dict[str, Any]:
        from edgewise.bench.worker import memory

        return {"memory": memory()}


# -- the parent side ----------------------------------------------------------------------------


def bench_histories(
    bundle: Path, run: Path | None, users: int, seed: int
) -> tuple[list[list[str]], np.ndarray | None, str, list[str]]:
    """(histories as item ids, validation targets as item indices or None, where they came from,
    the catalogue's item ids)."""
    from edgewise.bundle import load_bundle
    from edgewise.edge.pipelines.rec import open_tables

    with load_bundle(bundle) as b:
        settings, tables = open_tables(b)
    if run is not None:
        from edgewise.cloud.data.rec_data import leave_last_out, load_rec_dataset

        info = json.loads((Path(run) / "model.json").read_text())
        split = leave_last_out(load_rec_dataset(info["data"]["path"]))
        ids = tables.item_ids
        histories = [[ids[int(i)] for i in h[-settings.max_len :]] for h in split.valid_history[:users]]
        targets = np.asarray(split.valid_target[:users])
        return histories, targets, f"validation users of {info['data']['path']}", ids
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, settings.max_len + 1, users)
    histories = [[tables.item_ids[int(i)] for i in rng.integers(0, settings.n_items, n)] for n in lengths]
    return (
        histories,
        None,
        f"seeded random histories (seed {seed}, 1..{settings.max_len} items)",
        tables.item_ids,
    )


def bench_bundle(
    bundle: Path,
    out: Path,
    *,
    threads: int,
    seed: int = 0,
    run: Path | None = None,
    runs: int = 200,
    rounds: int = 5,
    warmup: int = WARMUP,
    k: int = 10,
    beam: int = 20,
) -> dict[str, Any]:
    """Each engine on the same histories (``runs`` requests, at most the validation users with a
    run), interleaved in ``rounds`` after ``warmup`` requests each; writes OUT/bench.json and
    OUT/bench.md."""
    import importlib.util

    from edgewise.bench.workers import WorkerProcess
    from edgewise.bundle import load_bundle
    from edgewise.fsutil import write_text_atomic

    with load_bundle(bundle) as b:
        name = f"{b.manifest.name}-{b.manifest.version}"
        precisions = sorted({a.precision for a in b.artifacts("rec_decoder") if a.format == "onnx"})
    histories, targets, source, item_ids = bench_histories(bundle, run, runs, seed)
    engines = [f"onnx-{p}" for p in precisions]
    notes = []
    if run is not None and importlib.util.find_spec("torch") is not None:
        engines.append("pytorch")
    elif run is not None:
        notes.append("no pytorch row: torch is not installed here")
    else:
        notes.append("no pytorch row and no HR/NDCG: pass --run RUN (the training run) for both")
    workers = {e: WorkerProcess(f"rec bench {e}", module="edgewise.bench.rec") for e in engines}
    loaded: dict[str, dict[str, Any]] = {}
    ms: dict[str, list[float]] = {e: [] for e in engines}
    items: dict[str, list[list[str]]] = {e: [] for e in engines}
    try:
        for e, w in workers.items():
            loaded[e] = w.call(
                "load", engine=e, bundle=str(bundle), threads=threads, run=str(run) if run else None
            )
            if warmup:
                w.call("recommend", histories=(histories * warmup)[:warmup], k=k, beam=beam)
        blocks = np.array_split(np.arange(len(histories)), max(1, min(rounds, len(histories))))
        for r, block in enumerate(blocks):
            part = [histories[i] for i in block]
            for e in engines[r % len(engines) :] + engines[: r % len(engines)]:  # rotate who goes first
                reply = workers[e].call("recommend", histories=part, k=k, beam=beam)
                ms[e] += reply["ms"]
                items[e] += reply["items"]
        peak = {e: w.call("memory")["memory"]["hwm_mb"] for e, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    rows = {}
    for e in engines:
        row: dict[str, Any] = {
            "latency_ms": _latency(ms[e]),
            "requests": len(ms[e]),
            "load_s": round(loaded[e]["load_s"], 3),
            "peak_rss_mb": round(peak[e], 1),
            "size_bytes": loaded[e]["size_bytes"],
            "backend": loaded[e]["backend"],
            "artifacts": loaded[e]["artifacts"],
        }
        if "export_gate_passed" in loaded[e]:
            row["export_gate_passed"] = loaded[e]["export_gate_passed"]
        if "pytorch" in items and e != "pytorch":
            same = [a == b for a, b in zip(items[e], items["pytorch"])]
            overlap = [len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(items[e], items["pytorch"])]
            row["vs_pytorch"] = {
                "same_top_k": round(float(np.mean(same)), 4),
                "top_k_overlap": round(float(np.mean(overlap)), 4),
            }
        if targets is not None:
            row["metrics"] = _metrics(item_ids, items[e], targets, k)
        rows[f"{name} {e.replace('-', ' ')}"] = row
    report = {
        "bundle": str(bundle),
        "task": "rec",
        "threads": threads,
        "k": k,
        "beam": beam,
        "users": len(histories),
        "histories": source,
        "rounds": len(blocks),
        "warmup": warmup,
        "rows": rows,
        "notes": notes,
    }
    report["summary"] = [
        f"{label}: p50 {r['latency_ms']['p50']:.2f} ms, p99 {r['latency_ms']['p99']:.2f} ms "
        f"(top-{k}, beam {beam}), peak RSS {r['peak_rss_mb']:.0f} MB"
        for label, r in rows.items()
    ]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "bench.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "bench.md", _markdown(report, name) + "\n")
    return report


def _metrics(item_ids: list[str], found: list[list[str]], targets: np.ndarray, k: int) -> dict[str, float]:
    """HR@k and NDCG@k of the recommended ids against the validation targets (item indices), by
    the training's own metrics (:func:`edgewise.cloud.rec.metrics.ranking_metrics`, numpy only)."""
    from edgewise.cloud.rec.metrics import ranking_metrics

    index = {item: i for i, item in enumerate(item_ids)}
    ranked = np.full((len(found), k), -1, dtype=np.int64)
    for r, row in enumerate(found):
        picks = [index[x] for x in row[:k]]
        ranked[r, : len(picks)] = picks
    return {key: round(v, 5) for key, v in ranking_metrics(ranked, targets, ks=(k,)).items()}


def _markdown(report: dict[str, Any], name: str) -> str:
    k, beam = report["k"], report["beam"]
    lines = [
        f"# {name}: top-{k} recommendations, beam {beam}, {report['threads']} threads",
        "",
        f"{report['users']} requests per row ({report['histories']}), batch 1, interleaved in "
        f"{report['rounds']} rounds after {report['warmup']} warm-up requests each.",
        "",
        f"| engine | p50 | p90 | p99 | HR@{k} | NDCG@{k} | same top-{k} as PyTorch | load | peak RSS | size |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in report["rows"].items():
        lat, m = r["latency_ms"], r.get("metrics") or {}
        same = (r.get("vs_pytorch") or {}).get("same_top_k")
        lines.append(
            f"| {label} | {lat['p50']:.2f} ms | {lat['p90']:.2f} ms | {lat['p99']:.2f} ms "
            f"| {m.get(f'hr@{k}', '-')} | {m.get(f'ndcg@{k}', '-')} | {'-' if same is None else f'{100 * same:.1f}%'} "
            f"| {r['load_s']:.2f} s | {r['peak_rss_mb']:.0f} MB | {r['size_bytes'] / 2**20:.2f} MB |"
        )
    lines += ["", *[f"- {note}" for note in report["notes"]]]
    return "\n".join(lines)


if __name__ == "__main__":
    from edgewise.bench.worker import main

    raise SystemExit(main(RecWorker()))
