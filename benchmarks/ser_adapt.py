"""Speaker-adaptive SER in the edge runtime: test UA against the utterances already heard.

For each seed it trains (or reuses, under ``--work``) the tiny SER preset on the corpus, fits its
speaker adapter (``edgewise train ser-adapter``), exports the bundle (``edgewise export``, ONNX
int8, parity-gated) and opens it with the device's own pipeline (onnxruntime, numpy front-end, no
torch). Every test utterance goes through that pipeline once: the model's logits and the prosodic
features. Then, for ``--orders`` random orders of each test speaker's utterances, the device's
:class:`edgewise.edge.adaptation.SpeakerAdaptation` hears them one by one; the prediction for the
utterance heard after ``n`` others of its speaker counts towards UA at ``n``. The first order of
the first seed also runs end to end through ``SERPipeline.classify(audio, speaker=...)``, and must
give the same labels as the replay (the replay only skips recomputing the features).

Next to it: the unadapted model (the same bundle, adaptation off) and the per-speaker eGeMAPS
bound (eGeMAPS functionals z-scored with *all* of each speaker's utterances, test speakers too;
openSMILE, cached under ``--work``). The bar: after 10 utterances, at least half of the gap between
the unadapted model and the bound closed. Writes ``OUT/ser_adapt.{json,md,png}``::

    .venv/bin/python benchmarks/ser_adapt.py --corpus benchmarks/work/corpus2000 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from report_files import write_report

HEARD = (0, 1, 2, 5, 10, 20)


def _edgewise(*args: str) -> None:
    cmd = [sys.executable, "-m", "edgewise", "-q", *args]
    print("running:", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def ensure_bundle(corpus: Path, work: Path, seed: int, precision: str) -> Path:
    run = work / f"tiny-s{seed}"
    if not (run / "model.safetensors").is_file():
        resume = ["--resume"] if (run / "checkpoints" / "last.safetensors").is_file() else []
        _edgewise(
            "train",
            "ser",
            "--config",
            "tiny",
            "--data",
            str(corpus),
            "--out",
            str(run),
            "--seed",
            str(seed),
            "--no-progress",
            *resume,
        )
    if not (run / "speaker_adapter.json").is_file():
        _edgewise("train", "ser-adapter", str(run), "--data", str(corpus), "--seed", str(seed))
    out = work / f"bundles-s{seed}"
    found = sorted(out.glob("*/manifest.json")) if out.is_dir() else []
    if not found:
        _edgewise("export", str(run), "--out", str(out), "--precision", precision, "--threads", "1")
        found = sorted(out.glob("*/manifest.json"))
    return found[0].parent


def egemaps_bound(corpus_dir: Path, work: Path) -> dict[str, Any]:
    cache = work / "egemaps_bound.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    from edgewise.cloud.baseline import egemaps_baselines
    from edgewise.cloud.data.corpus import load_corpus

    plain, per_speaker = egemaps_baselines(load_corpus(corpus_dir), workers=2)
    out = {"plain_ua": plain["ua"], "per_speaker_ua": per_speaker["ua"], "model": per_speaker["model"]}
    cache.write_text(json.dumps(out, indent=2) + "\n")
    return out


def ua(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    return float(np.mean([np.mean(pred[truth == c] == c) for c in range(n_classes) if (truth == c).any()]))


def measure_seed(
    bundle: Path, corpus_dir: Path, orders: int, seed: int, check_end_to_end: bool
) -> dict[str, Any]:
    from edgewise.audio import load_audio
    from edgewise.cloud.data.corpus import load_corpus
    from edgewise.devices import load_profile
    from edgewise.edge.adaptation import AdaptationConfig
    from edgewise.edge.pipelines.ser import SERPipeline

    corpus = load_corpus(corpus_dir)
    items = corpus.split("test")
    pipe = SERPipeline.from_bundle(bundle, load_profile("x86-local"), threads=1)
    labels = list(pipe.labels)
    truth = np.array([labels.index(u.label) for u in items])
    speakers = np.array([u.speaker for u in items])
    audio = [load_audio(str(u.path), pipe.sample_rate) for u in items]
    unadapted, logits, latency = [], [], []
    for a in audio:
        scores, frontend_ms, model_ms = pipe.logits(a)
        unadapted.append(int(np.argmax(scores)))
        latency.append(frontend_ms + model_ms)
        logits.append(scores)
    with tempfile.TemporaryDirectory() as state:
        pipe.enable_adaptation(AdaptationConfig(speaker="given"), Path(state))
        adaptation = pipe.adaptation
        assert adaptation is not None
        started = time.perf_counter()
        feats = [adaptation.head.features(a, logits[i], pipe.sample_rate) for i, a in enumerate(audio)]
        features_ms = (time.perf_counter() - started) / len(audio) * 1000
        rng = np.random.default_rng(seed)
        by_heard: dict[int, tuple[list[int], list[int]]] = {n: ([], []) for n in HEARD}
        adaptation.persist = False
        end_to_end: dict[str, Any] | None = None
        for k in range(orders):
            adaptation.reset()
            order = {s: rng.permutation(np.flatnonzero(speakers == s)) for s in np.unique(speakers)}
            replay = {}
            for s, idx in order.items():
                for i in idx:
                    scores, info = adaptation.adapt_features(feats[i], s)
                    replay[i] = int(np.argmax(scores))
                    if info["heard"] in by_heard:
                        by_heard[info["heard"]][0].append(int(truth[i]))
                        by_heard[info["heard"]][1].append(replay[i])
            if k == 0 and check_end_to_end:  # the same order through the whole pipeline
                adaptation.reset()
                adaptation.persist = True
                started = time.perf_counter()
                full = {}
                for s, idx in order.items():
                    for i in idx:
                        res = pipe.classify(audio[i], speaker=s)
                        full[i] = labels.index(res.label)
                seconds = time.perf_counter() - started
                adaptation.persist = False
                same = sum(full[i] == replay[i] for i in full)
                end_to_end = {
                    "utterances": len(full),
                    "same_labels": same,
                    "ms_per_utterance": seconds / len(full) * 1000,
                }
                if same != len(full):
                    raise SystemExit(
                        f"end to end and replay disagree on {len(full) - same} of {len(full)} labels"
                    )
    pipe.close()
    n_classes = len(labels)
    return {
        "bundle": str(bundle),
        "backend": pipe.describe()["backend"] if hasattr(pipe, "describe") else None,
        "unadapted_ua": ua(truth, np.array(unadapted), n_classes),
        "ua_by_heard": {str(n): ua(np.array(t), np.array(p), n_classes) for n, (t, p) in by_heard.items()},
        "predictions_by_heard": {str(n): len(t) for n, (t, _) in by_heard.items()},
        "test_speakers": int(len(np.unique(speakers))),
        "utterances_per_speaker": sorted(int((speakers == s).sum()) for s in np.unique(speakers)),
        "latency_ms_p50_unadapted": float(np.median(latency)),
        "adaptation_features_ms": features_ms,
        "end_to_end": end_to_end,
    }


def summarize(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "values": [round(v, 4) for v in arr]}


def markdown(report: dict[str, Any]) -> str:
    bound = report["bound"]["per_speaker_ua"]
    lines = [
        "# Speaker-adaptive SER in the edge runtime: test UA against utterances heard",
        "",
        f"Command: `{report['command']}`  ",
        f"Corpus: `{report['corpus']}`: {report['test_speakers']} held-out test speakers, "
        f"{min(report['utterances_per_speaker'])}-{max(report['utterances_per_speaker'])} utterances each; "
        f"{report['orders']} random orders per speaker and seed. Model: the tiny preset (HRF, merged), "
        f"ONNX {report['precision']} in onnxruntime through `SERPipeline`, seeds {report['seeds']}. "
        f"Machine: {report['machine']}.",
        "",
        "| utterances heard before | adapted UA (mean ± std) | gap closed | per seed |",
        "|---:|---:|---:|---|",
    ]
    base = report["unadapted"]["mean"]
    for n in HEARD:
        s = report["adapted"][str(n)]
        closed = (s["mean"] - base) / (bound - base) if bound > base else float("nan")
        lines.append(
            f"| {n} | {s['mean']:.3f} ± {s['std']:.3f} | {closed:+.0%} | {', '.join(f'{v:.3f}' for v in s['values'])} |"
        )
    lines += [
        "",
        f"- Unadapted (same bundles, adaptation off): UA {base:.3f} ± {report['unadapted']['std']:.3f} "
        f"({', '.join(f'{v:.3f}' for v in report['unadapted']['values'])}).",
        f"- Per-speaker eGeMAPS bound ({report['bound']['model']}, every utterance of each speaker known "
        f"in advance): UA {bound:.3f}; eGeMAPS without speaker normalization: {report['bound']['plain_ua']:.3f}.",
        f"- Of the {report['adapted']['10']['mean'] - base:+.3f} at 10 heard, {report['adapted']['0']['mean'] - base:+.3f} is the "
        "head itself (the prosodic features next to the logits, with the population's statistics) and "
        f"{report['adapted']['10']['mean'] - report['adapted']['0']['mean']:+.3f} is what the speaker's own statistics add.",
        f"- Bar: after 10 utterances, half the gap closed: {report['bar']['closed_at_10']:.0%} "
        f"({'met' if report['bar']['met'] else 'not met'}).",
        f"- Cost on the device: the prosodic features and the head add {report['adaptation_ms']:.1f} ms per "
        f"utterance (numpy, 1 thread), next to {report['latency_ms_p50_unadapted']:.1f} ms p50 for the "
        "unadapted front-end and model.",
        f"- End to end: one order of seed {report['seeds'][0]} through `SERPipeline.classify(audio, speaker=...)` "
        f"gave the same label as the replay for {report['end_to_end']['same_labels']} of "
        f"{report['end_to_end']['utterances']} utterances.",
        "",
        "![UA against utterances heard](ser_adapt.png)",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = list(HEARD)
    mean = [report["adapted"][str(n)]["mean"] for n in xs]
    std = [report["adapted"][str(n)]["std"] for n in xs]
    ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label="adapted (edge runtime)")
    ax.axhline(report["unadapted"]["mean"], color="gray", ls="--", label="unadapted")
    ax.axhline(report["bound"]["per_speaker_ua"], color="green", ls=":", label="per-speaker eGeMAPS bound")
    ax.set_xlabel("utterances of the speaker heard before")
    ax.set_ylabel("test UA")
    ax.set_title(f"speaker adaptation, tiny SER, seeds {report['seeds']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="an edgewise corpus with speakers")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/adapt"), help="runs and bundles")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--orders", type=int, default=200, help="random orders per speaker and seed")
    parser.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    bound = egemaps_bound(args.corpus, args.work)
    seeds = {}
    for i, seed in enumerate(args.seeds):
        bundle = ensure_bundle(args.corpus, args.work, seed, args.precision)
        seeds[seed] = measure_seed(bundle, args.corpus, args.orders, seed, check_end_to_end=i == 0)
        print(
            f"seed {seed}:",
            json.dumps({k: seeds[seed][k] for k in ("unadapted_ua", "ua_by_heard")}),
            flush=True,
        )
    first = seeds[args.seeds[0]]
    adapted = {str(n): summarize([s["ua_by_heard"][str(n)] for s in seeds.values()]) for n in HEARD}
    unadapted = summarize([s["unadapted_ua"] for s in seeds.values()])
    gap = bound["per_speaker_ua"] - unadapted["mean"]
    closed = (adapted["10"]["mean"] - unadapted["mean"]) / gap if gap > 0 else float("nan")
    report = {
        "command": "python benchmarks/ser_adapt.py " + " ".join(sys.argv[1:]),
        "corpus": str(args.corpus),
        "seeds": args.seeds,
        "orders": args.orders,
        "precision": args.precision,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "heard": list(HEARD),
        "adapted": adapted,
        "unadapted": unadapted,
        "bound": bound,
        "bar": {"closed_at_10": closed, "met": bool(closed >= 0.5)},
        "test_speakers": first["test_speakers"],
        "utterances_per_speaker": first["utterances_per_speaker"],
        "adaptation_ms": float(np.mean([s["adaptation_features_ms"] for s in seeds.values()])),
        "latency_ms_p50_unadapted": float(np.mean([s["latency_ms_p50_unadapted"] for s in seeds.values()])),
        "end_to_end": first["end_to_end"],
        "per_seed": {str(k): v for k, v in seeds.items()},
        "wall_s": round(time.time() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(report, args.out / "ser_adapt.png")
    write_report(args.out, "ser_adapt", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
