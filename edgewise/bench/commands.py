"""CLI handler: ``edgewise bench BUNDLE --out DIR`` (also ``python -m edgewise.bench``).

Runtimes, torch and matplotlib are imported inside the run (torch only in the PyTorch rows'
worker processes), so ``--help`` stays fast and a device without them still benchmarks.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from edgewise.bench.ceiling import DEFAULT_REPEATS, DEFAULT_SIZES
from edgewise.errors import ConfigError, EdgewiseError

log = logging.getLogger("edgewise.bench")

FORMAT_CHOICES = ("onnx", "tflite", "tensorrt-onnx", "tensorrt")
PRECISION_CHOICES = ("fp32", "fp16", "int8")
# measurement flags that travel to the device unchanged in --host mode: dest -> option
PASSTHROUGH = {
    "formats": "--formats",
    "precisions": "--precisions",
    "threads": "--threads",
    "seconds": "--seconds",
    "runs": "--runs",
    "warmup": "--warmup",
    "rounds": "--rounds",
    "batches": "--batches",
    "block_seconds": "--block-seconds",
    "cold_runs": "--cold-runs",
    "ceiling_sizes": "--ceiling-sizes",
    "ceiling_repeats": "--ceiling-repeats",
    "seed": "--seed",
}

EPILOG = """\
One row per classifier artifact that runs here (filtered by --formats/--precisions), plus, with
--run and torch installed, PyTorch eager rows (merged, HRF training form, plain backbone). Each
row: cold load (fresh processes), warm latency p50/p90/p99 (batch 1), throughput per batch size,
peak RSS against a runtime-only baseline process, CPU seconds per audio second, and achieved
FLOP/s as a fraction of the fp32 or int8 GEMM ceiling measured in the same run. Warm latency and
throughput are interleaved round by round; ratios vs ONNX fp32 are medians of per-round ratios.

Writes OUT/bench.json (schema: edgewise/bench/schema.py), OUT/bench.md and OUT/bench_*.png.
Exit 2 when the bundle does not verify (the report says why) or the device cannot be reached;
an artifact whose runtime is missing or that fails to load is a row that says so.

examples:
  edgewise bench ser-tiny-1.0.0.tar.gz --out bench/
  edgewise bench ser-tiny-1.0.0/ --formats onnx --precisions int8 --run RUN --out bench/
  edgewise bench ser-tiny-1.0.0/ --device rpi5 --host pi@10.0.0.7 --out bench-rpi5/
  edgewise bench ser-tiny-1.0.0/ --host b1 --out bench-b1/     # b1: an inventory name (edgewise board)

On an emulated board (its /etc/edgewise-emulated says so) every timing is labelled emulated and no
device-profile order is suggested: memory, sizes and parity still hold, the speed is qemu's.
"""


def bench_add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("bundle", type=Path, help="a bundle folder NAME-VERSION/ or its .tar.gz")
    p.add_argument("--out", required=True, type=Path, help="folder for bench.json, bench.md and the plots")
    p.add_argument("--formats", nargs="+", choices=FORMAT_CHOICES, help="only these formats (default: all)")
    p.add_argument("--precisions", nargs="+", choices=PRECISION_CHOICES, help="only these precisions")
    p.add_argument(
        "--run",
        type=Path,
        help="the training run the bundle came from: adds PyTorch eager rows (needs torch)",
    )
    dev = p.add_argument_group("device")
    dev.add_argument(
        "--device", help="device profile name or YAML: threads and execution providers; labels the report"
    )
    dev.add_argument(
        "--host",
        help="user@addr or a device inventory name (edge-deploy, edgewise board): run the benchmark on "
        "the device over ssh; a recorded device brings its address, port, ssh options and profile",
    )
    dev.add_argument("--port", type=int, help="ssh port (default: the inventory's, else 22)")
    dev.add_argument("--identity", type=Path, help="ssh private key file (default: the inventory's)")
    dev.add_argument(
        "--known-hosts", type=Path, help="ssh known_hosts file (default: the inventory's, else the user's)"
    )
    dev.add_argument(
        "--remote-python",
        help="the device's Python with edgewise (default: INSTALL_ROOT/venv/bin/python, else the profile's python)",
    )
    p.add_argument("--key", type=Path, help="ed25519 public key: the bundle's signature must verify")
    m = p.add_argument_group("measurement")
    m.add_argument(
        "--threads",
        type=int,
        help="threads per row and for the ceiling (default: the profile's, else the usable cores)",
    )
    m.add_argument("--seconds", type=float, default=3.0, help="length of the fixed input (default 3.0)")
    m.add_argument("--runs", type=int, default=200, help="warm-latency runs per row (default 200)")
    m.add_argument("--warmup", type=int, default=10, help="warm-up runs per row before timing (default 10)")
    m.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    m.add_argument(
        "--batches", type=int, nargs="+", default=[1, 4, 16], help="throughput batch sizes (default 1 4 16)"
    )
    m.add_argument(
        "--block-seconds",
        type=float,
        default=0.2,
        help="seconds per throughput block and round (default 0.2)",
    )
    m.add_argument(
        "--cold-runs", type=int, default=3, help="fresh processes per row for cold load (default 3)"
    )
    m.add_argument(
        "--ceiling-sizes",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        help=f"GEMM sizes N for the ceiling (default {' '.join(map(str, DEFAULT_SIZES))})",
    )
    m.add_argument(
        "--ceiling-repeats",
        type=int,
        default=DEFAULT_REPEATS,
        help="timed GEMMs per size, best kept (default 3)",
    )
    m.add_argument(
        "--corpus",
        type=Path,
        help="warm latency on real utterances of this corpus instead of the fixed input",
    )
    m.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="corpus split (default test)"
    )
    m.add_argument("--limit", type=int, default=50, help="corpus utterances used (default 50)")
    m.add_argument("--seed", type=int, default=0, help="seed of the fixed input (default 0)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")


def _formats(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return list(dict.fromkeys("tensorrt-onnx" if v == "tensorrt" else v for v in values))


def _passthrough(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for dest, option in PASSTHROUGH.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        out += [option, *map(str, values)]
    return out


def _command(args: argparse.Namespace) -> str:
    """The command line, rebuilt from the parsed arguments (flags left at their defaults omitted)."""
    defaults = argparse.ArgumentParser()
    bench_add_arguments(defaults)
    words = ["edgewise", "bench", str(args.bundle)]
    for action in defaults._actions:
        if not action.option_strings or action.dest in ("help", "bundle"):
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default:
            continue
        if value is True:
            words.append(action.option_strings[-1])
        else:
            words += [action.option_strings[-1], *map(str, value if isinstance(value, list) else [value])]
    return shlex.join(words)


def bench_run(args: argparse.Namespace) -> int:
    from edgewise.bench.environment import usable_cores
    from edgewise.bench.report import write_report
    from edgewise.bench.runner import BenchOptions, BundleDoesNotVerify, run_bench
    from edgewise.devices import load_profile

    task = _bundle_task(args.bundle)
    if task not in (None, "ser"):  # another family: its bench from the task registry (edgewise/tasks.py)
        return _bench_family(args, task)
    if args.host:
        report = _remote(args)
    else:
        if args.port is not None or args.identity is not None or args.known_hosts is not None:
            raise ConfigError(
                "--port, --identity and --known-hosts need --host: they say how to reach a device"
            )
        profile = load_profile(args.device) if args.device else None
        if args.threads is not None and args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        opts = BenchOptions(
            bundle=args.bundle,
            formats=_formats(args.formats),
            precisions=args.precisions,
            run=args.run,
            profile=profile,
            threads=args.threads or (profile.threads if profile else usable_cores() or 1),
            seconds=args.seconds,
            runs=args.runs,
            warmup=args.warmup,
            rounds=args.rounds,
            batches=list(args.batches),
            block_seconds=args.block_seconds,
            cold_runs=args.cold_runs,
            ceiling_sizes=tuple(args.ceiling_sizes),
            ceiling_repeats=args.ceiling_repeats,
            corpus=args.corpus,
            split=args.split,
            limit=args.limit,
            key=args.key,
            seed=args.seed,
            command=_command(args),
        )
        name = profile.name if profile else None
        device = {"name": name, "host": None, "label": name or f"{platform.node() or 'this machine'} (local)"}
        try:
            report = run_bench(opts, device)
        except BundleDoesNotVerify as exc:
            write_report(exc.report, args.out)
            raise
    if not report["bundle"]["verified"]:
        write_report(report, args.out)
        raise EdgewiseError(
            f"bundle does not verify on {report['device']['label']}: {report['bundle']['error']}"
        )
    path = write_report(report, args.out, plots=not args.no_plots)
    _summary(report, path)
    return 0


def _bundle_task(bundle: Path) -> str | None:
    """The bundle's task, or None when it cannot be read here (the SER path reports why)."""
    from edgewise.bundle import load_bundle

    try:
        with load_bundle(bundle, verify=False, check_artifacts=False) as b:
            return b.manifest.task
    except Exception:  # a broken bundle is reported by the SER path with its full explanation
        return None


def _bench_family(args: argparse.Namespace, task: str) -> int:
    from edgewise.bench.environment import usable_cores
    from edgewise.tasks import task_spec

    if args.host:
        raise ConfigError(
            f"benchmarking a {task} bundle over --host is not supported yet: run edgewise bench on the device"
        )
    threads = args.threads or usable_cores() or 1
    bench = task_spec(task).load("bench")
    params = inspect.signature(bench).parameters
    extra = {}
    if args.run is not None:
        if "run" not in params:
            raise ConfigError(f"--run is not used when benchmarking a {task} bundle")
        extra["run"] = args.run
    defaults = argparse.ArgumentParser()
    bench_add_arguments(defaults)
    for action in defaults._actions:  # measurement flags the family's bench takes, when given
        value = getattr(args, action.dest, None)
        if action.dest in ("runs", "rounds", "warmup") and action.dest in params and value != action.default:
            if value < (0 if action.dest == "warmup" else 1):
                raise ConfigError(f"{action.option_strings[-1]} must be at least 1, got {value}")
            extra[action.dest] = value
    report = bench(args.bundle, args.out, threads=threads, seed=args.seed or 0, **extra)
    for line in report.get("summary") or []:  # a family's own summary lines (rec)
        print(line)
    for label, row in report["rows"].items() if "summary" not in report else ():
        print(
            f"{label}: RTF {row['rtf_median']:.3f}, first audio (20 words) {row['first_audio_20_words_s'] * 1000:.0f} ms, "
            f"peak RSS {row['peak_rss_mb']:.0f} MB"
        )
    print(f"report: {args.out / 'bench.md'}")
    return 0


def _remote(args: argparse.Namespace) -> dict:
    from edgewise.bench.remote import run_remote
    from edgewise.devices import load_profile
    from edgewise.edge.deploy import inventory

    where = inventory.resolve(args.host, args.port, profile=args.device)
    if where.profile is None:
        raise ConfigError(
            f"--host {args.host} needs --device NAME: the device's profile (edgewise/devices) or a YAML file"
            + ("" if where.name else f" (it is not a device in the inventory {inventory.inventory_path()})")
        )
    profile = load_profile(where.profile)
    recorded = where.ssh
    ignored = [flag for flag, value in (("--run", args.run), ("--corpus", args.corpus)) if value is not None]
    report = run_remote(
        bundle=args.bundle,
        profile=profile,
        device_arg=where.profile,
        host=where.host,
        port=where.port or 22,
        identity=args.identity or _path(recorded.get("identity")),
        known_hosts=args.known_hosts or _path(recorded.get("known_hosts")),
        host_key_checking=recorded.get("strict_host_key_checking", "accept-new"),
        inventory_name=where.name,
        key=args.key,
        remote_python=args.remote_python,
        passthrough=_passthrough(args),
        say=lambda line: print(line, flush=True),
    )
    report["command"] = _command(args)
    if ignored:
        report["notes"].append(
            f"{' and '.join(ignored)} not used with --host: they name files on this machine, not the device"
        )
    return report


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _summary(report: dict, path: Path) -> None:
    from edgewise.bench.report import emulated_banner, not_suggested

    banner = emulated_banner(report)
    if banner:
        print(banner)
    tag = "(emulated timings) " if banner else ""
    for row in report["rows"]:
        if row["status"] != "ok":
            print(f"{row['name']}: {row['status']}: {row['reason']}")
            continue
        thr = max(row["throughput"], key=lambda t: t["utterances_per_s"], default=None)
        flops = row.get("flops") or {}
        frac = flops.get("fraction_of_ceiling")
        parts = [f"p50 {row['latency_ms']['p50']:.2f} ms", f"cold {row['cold']['cold_ms']:.0f} ms"]
        if thr:
            parts.append(f"{thr['utterances_per_s']:.0f} utt/s at batch {thr['batch']}")
        parts.append(
            "flops unknown" if frac is None else f"{100 * frac:.1f}% of the {flops['ceiling']} ceiling"
        )
        if row.get("ratio_vs_onnx_fp32") is not None:
            parts.append(f"{row['ratio_vs_onnx_fp32']:.2f}x ONNX fp32")
        print(f"{row['name']}: {tag}" + ", ".join(parts))
    if banner and report["rows"]:
        print(not_suggested(report))
    print(f"report: {path} and {path.with_name('bench.md')}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgewise.bench ARGS``: ``edgewise bench ARGS`` (the CLI's own error handling)."""
    from edgewise.cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    flags = [a for a in args if a in ("-v", "-vv", "-q", "--verbose", "--quiet")]
    return cli_main([*flags, "bench", *[a for a in args if a not in flags]])
