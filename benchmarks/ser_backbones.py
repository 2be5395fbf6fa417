"""The dynamic-graph SER backbone next to the three transformer backbones: UA, parameters, latency.

* UA: the tiny preset (HRF, merged; no KD) on the corpus, 3 seeds. Runs are trained (or reused)
  under ``--work`` as ``ARCH-sS`` (``edgewise train ser --config tiny --set model.arch=ARCH``);
  ``--run ARCH=RUN`` adds a finished run of the same recipe (e.g. the speaker-adaptation report's
  conv_transformer seeds), and an architecture with no runs takes its figures from the cloud speech
  report (``--reference``, same corpus, preset and seeds), which the table says.
* Parameters: the deployed (merged) model.
* Edge latency: each merged architecture exported to ONNX (random weights: the cost does not
  depend on them) and run by onnxruntime with 1 thread, batch 1, 3 s of audio, interleaved
  rounds; p50 and p99.

Writes ``OUT/ser_backbones.{json,md,png}``::

    .venv/bin/python benchmarks/ser_backbones.py --corpus benchmarks/work/corpus2000 \\
        --run conv_transformer=benchmarks/work/adapt/tiny-s0 ... --out benchmarks/results
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

ARCHS = ("conv_transformer", "conformer", "speechformer", "dynamic_graph")


def train(corpus: Path, work: Path, arch: str, seed: int) -> Path:
    run = work / f"{arch}-s{seed}"
    if not (run / "model.safetensors").is_file():
        cmd = [
            sys.executable,
            "-m",
            "edgewise",
            "-q",
            "train",
            "ser",
            "--config",
            "tiny",
            "--data",
            str(corpus),
        ]
        cmd += ["--out", str(run), "--seed", str(seed), "--set", f"model.arch={arch}", "--no-progress"]
        if (run / "checkpoints" / "last.safetensors").is_file():
            cmd.append("--resume")
        print("running:", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
    return run


def run_ua(run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "model.json").read_text())
    return {
        "run": str(run),
        "ua": metrics["ua"],
        "parameters": metrics.get("parameters"),
        "arch": config["model"]["arch"],
    }


def latency(archs: tuple[str, ...], rounds: int, reps: int) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from edgewise.cloud.models.hrf import HRFConfig, count_parameters, reparameterize_model
    from edgewise.cloud.models.registry import ModelConfig, build_model
    from edgewise.cloud.train.config import resolve_config
    from edgewise.features import LogMelConfig, num_frames

    tiny = resolve_config("tiny").model
    frames = num_frames(3 * 16000, LogMelConfig())
    x = np.random.default_rng(0).normal(size=(1, frames, tiny.n_mels)).astype(np.float32)
    sessions, params = {}, {}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            torch.manual_seed(0)
            cfg = ModelConfig(**{**tiny.model_dump(), "arch": arch, "hrf": HRFConfig(expansion=2.0)})
            merged = reparameterize_model(build_model(cfg).eval()).eval()
            params[arch] = count_parameters(merged)
            path = Path(tmp) / f"{arch}.onnx"
            torch.onnx.export(
                merged, (torch.from_numpy(x),), str(path), input_names=["features"], output_names=["logits"],
                dynamic_axes={"features": {0: "batch", 1: "time"}}, opset_version=17, dynamo=False,
            )  # fmt: skip
            sessions[arch] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    times: dict[str, list[float]] = {a: [] for a in archs}
    for s in sessions.values():
        for _ in range(5):
            s.run(None, {"features": x})
    for r in range(rounds):
        order = list(archs[r % len(archs) :]) + list(archs[: r % len(archs)])
        for arch in order:
            t0 = time.perf_counter()
            for _ in range(reps):
                sessions[arch].run(None, {"features": x})
            times[arch].append((time.perf_counter() - t0) / reps * 1000)
    return {
        arch: {
            "parameters": params[arch],
            "p50_ms": float(np.percentile(times[arch], 50)),
            "p99_ms": float(np.percentile(times[arch], 99)),
        }
        for arch in archs
    } | {"_setup": {"frames": frames, "audio_seconds": 3.0, "threads": 1, "rounds": rounds, "reps": reps}}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# SER backbones: the dynamic-graph backbone next to the three transformer backbones",
        "",
        f"Command: `{report['command']}`  ",
        f"Corpus: `{report['corpus']}`; the tiny preset (HRF, merged, no KD), test UA over seeds {report['seeds']}. "
        f"Latency: the merged model in ONNX, onnxruntime, 1 thread, batch 1, 3 s of audio "
        f"({report['latency']['_setup']['frames']} frames), {report['latency']['_setup']['rounds']} interleaved rounds. "
        f"Machine: {report['machine']}.",
        "",
        "| backbone | test UA (mean ± std) | per seed | parameters (deployed) | ONNX p50 ms | p99 ms | UA from |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for arch in ARCHS:
        ua = report["ua"][arch]
        lat = report["latency"][arch]
        values = ", ".join(f"{v:.3f}" for v in ua["values"])
        lines.append(
            f"| {arch} | {ua['mean']:.3f} ± {ua['std']:.3f} | {values} | {lat['parameters']:,} | "
            f"{lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} | {ua['source']} |"
        )
    lines += [
        "",
        "Formats: the dynamic-graph backbone exports through the same export layer as the others: ONNX "
        "(dynamic length) and TFLite (fixed windows) pass the parity gate (tests/cloud/models/test_dynamic_graph.py); "
        "TensorRT builds from the same ONNX graph and is untested here (no GPU).",
        "",
        "![backbones](ser_backbones.png)",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for arch in ARCHS:
        ua, lat = report["ua"][arch], report["latency"][arch]
        ax.errorbar(lat["p50_ms"], ua["mean"], yerr=ua["std"], marker="o", capsize=3, label=arch)
    ax.set_xlabel("ONNX p50 latency, 3 s of audio (ms)")
    ax.set_ylabel("test UA")
    ax.set_title("tiny SER backbones (HRF merged)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/graph"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--train", nargs="+", default=["dynamic_graph"], choices=ARCHS, help="archs to train when missing"
    )
    parser.add_argument(
        "--run", action="append", default=[], metavar="ARCH=RUN", help="a finished run of the same recipe"
    )
    parser.add_argument("--reference", type=Path, default=Path("benchmarks/results/ser_report.json"))
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    given: dict[str, list[Path]] = {}
    for item in args.run:
        arch, sep, path = item.partition("=")
        if not sep or arch not in ARCHS:
            parser.error(f"--run {item!r}: expected ARCH=RUN with ARCH one of {', '.join(ARCHS)}")
        given.setdefault(arch, []).append(Path(path))
    reference = json.loads(args.reference.read_text()) if args.reference.is_file() else {}
    ua: dict[str, Any] = {}
    for arch in ARCHS:
        runs = list(given.get(arch, []))
        if not runs and arch in args.train:  # trains the seeds that have no finished run yet
            runs = [train(args.corpus, args.work, arch, s) for s in args.seeds]
        elif not runs:
            runs = [
                args.work / f"{arch}-s{s}"
                for s in args.seeds
                if (args.work / f"{arch}-s{s}" / "metrics.json").is_file()
            ]
        if runs:
            found = [run_ua(r) for r in runs]
            bad = [f["run"] for f in found if f["arch"] != arch]
            if bad:
                parser.error(f"--run {arch}: {bad} are runs of another architecture")
            values, source = (
                [f["ua"] for f in found],
                "runs: " + ", ".join(Path(f["run"]).name for f in found),
            )
        elif arch in reference.get("hrf_vs_plain", {}):
            values, source = (
                reference["hrf_vs_plain"][arch]["hrf"]["values"],
                f"{args.reference.name} (same recipe)",
            )
        else:
            parser.error(f"{arch}: no runs and no figures in {args.reference}")
        arr = np.asarray(values, dtype=float)
        ua[arch] = {
            "mean": float(arr.mean()),
            "std": float(arr.std()),
            "values": [float(v) for v in arr],
            "source": source,
        }
    report = {
        "command": "python benchmarks/ser_backbones.py " + " ".join(sys.argv[1:]),
        "corpus": str(args.corpus),
        "seeds": args.seeds,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "ua": ua,
        "latency": latency(ARCHS, args.rounds, args.reps),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(report, args.out / "ser_backbones.png")
    write_report(args.out, "ser_backbones", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
