"""CLI handlers: ``edgewise export`` and ``edgewise bundle inspect|verify|sign|keygen``.

Choices for ``--format``, ``--precision`` and ``--quant`` come from the format table. Torch and the
runtimes are imported inside the run functions, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgewise.errors import ConfigError
from edgewise.export.formats import FORMATS, QUANT_MODES, all_precisions, valid_combinations

_TOLERANCE_KEYS = ("fp32", "fp16", "int8", "int8-dynamic", "int8-static")


def _key_values(items: list[str], option: str, scale: float = 1.0) -> dict[str, float]:
    """``["int8=0.3", ...]`` -> ``{"int8": 0.3}``; keys are precisions or ``int8-dynamic``/``int8-static``."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in _TOLERANCE_KEYS:
            raise ConfigError(
                f"{option} {item!r}: expected KEY=VALUE with KEY one of {', '.join(_TOLERANCE_KEYS)}"
            )
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{option} {item!r}: {value!r} is not a number") from None
        if not number >= 0:
            raise ConfigError(f"{option} {item!r}: must be >= 0")
        out[key] = number * scale
    return out


def export_add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "formats and precisions (from the format table):\n"
        + valid_combinations()
        + "\n\nEvery artifact is run in its runtime on the validation split and compared with the "
        "PyTorch model;\nexport fails (exit 2, no bundle) when one exceeds its tolerance."
    )
    p.add_argument(
        "run",
        type=Path,
        help="a finished training run (edgewise train ser, edgewise train tts with --vocoder, or a lazy "
        "edgewise train rec run)",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="folder to write NAME-VERSION/ and NAME-VERSION.tar.gz in"
    )
    p.add_argument(
        "--format", dest="formats", action="append", choices=list(FORMATS), help="repeatable (default: onnx)"
    )
    p.add_argument(
        "--precision",
        dest="precisions",
        action="append",
        choices=all_precisions(),
        help="repeatable (default: fp32)",
    )
    p.add_argument(
        "--quant",
        action="append",
        choices=QUANT_MODES,
        help="int8 mode, repeatable: dynamic (weights only, no data) or static (QDQ, calibrated); "
        "default: the format's first mode",
    )
    p.add_argument("--name", help="bundle name (default: the run's name)")
    p.add_argument("--version", default="1.0.0", help="bundle semantic version (default: 1.0.0)")
    p.add_argument("--sign-key", type=Path, help="ed25519 private key to sign the manifest with")
    p.add_argument(
        "--data", type=Path, help="corpus for the parity gate and calibration (default: the run's corpus)"
    )
    p.add_argument(
        "--no-gate",
        action="store_true",
        help="write the bundle even if an artifact fails parity (recorded as failed)",
    )
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="KEY=ATOL",
        help="override the max |logit diff| of a precision, e.g. int8=0.3 or int8-static=0.5",
    )
    p.add_argument(
        "--max-ua-drop",
        action="append",
        default=[],
        metavar="KEY=POINTS",
        help="override the allowed UA drop in points, e.g. int8=3",
    )
    p.add_argument(
        "--calibration-size", type=int, default=300, help="training utterances for int8 static (default: 300)"
    )
    p.add_argument(
        "--window-seconds",
        type=float,
        default=3.0,
        help="input window of fixed-shape formats (TFLite); the runtime tiles shorter and chunks longer "
        "audio (default: 3.0)",
    )
    p.add_argument(
        "--no-vad",
        action="store_true",
        help="do not ship the Silero VAD model (role 'vad') that devices segment microphone audio with",
    )
    p.add_argument(
        "--threads", type=int, default=min(4, os.cpu_count() or 1), help="CPU threads for export and parity"
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing bundle of the same name and version"
    )
    p.add_argument("--cache-dir", type=Path, help="feature cache (default: CORPUS/.edgewise-cache)")
    tts = p.add_argument_group("tts runs")
    tts.add_argument(
        "--vocoder", type=Path, help="the vocoder run (edgewise train vocoder) to ship with a TTS run"
    )
    tts.add_argument(
        "--wer-sentences",
        type=int,
        default=100,
        help="validation sentences the end-to-end WER gate speaks and recognizes (default: 100)",
    )
    tts.add_argument(
        "--int8-graphs",
        metavar="ROLE[,ROLE]",
        help="the graphs the int8 voice quantizes (default: tts_flow,vocoder; the others run fp32)",
    )
    tts.add_argument(
        "--max-wer-increase",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="how many WER points an artifact set may lose against PyTorch (default: 1)",
    )
    rec = p.add_argument_group("rec runs (the lazy decoder-only model)")
    rec.add_argument(
        "--gate-users",
        type=int,
        default=0,
        metavar="N",
        help="validation users the end-to-end gate ranks with PyTorch and the device's beam search (default: all)",
    )
    rec.add_argument(
        "--max-ndcg-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="how many NDCG@10 points (x100) an artifact set may lose against PyTorch (default: 1)",
    )


def export_run(args: argparse.Namespace) -> int:
    """Dispatch on the run's task (the task registry names each task's exporter)."""
    from edgewise.tasks import task_of_run, task_spec

    return int(task_spec(task_of_run(args.run)).load("exporter")(args))


def export_tts(args: argparse.Namespace) -> int:
    from edgewise.export.tts import FORMATS as FORMATS_TTS
    from edgewise.export.tts import INT8_ROLES, PRECISIONS, TTSExportOptions
    from edgewise.export.tts import export_tts as run_export

    if args.vocoder is None:
        raise ConfigError(f"{args.run} is a TTS run: give its vocoder with --vocoder VOCODER_RUN")
    unsupported = sorted(set(args.formats or []) - set(FORMATS_TTS))
    if unsupported:
        raise ConfigError(
            f"a voice exports to {' and '.join(FORMATS_TTS)}; --format {', '.join(unsupported)} is not "
            "supported for TTS runs (TensorRT: build engines from the ONNX graphs on the device)"
        )
    if args.wer_sentences < 1:
        raise ConfigError(f"--wer-sentences must be at least 1, got {args.wer_sentences}")
    opts = TTSExportOptions(
        out=args.out,
        vocoder=args.vocoder,
        precisions=args.precisions or list(PRECISIONS),
        formats=args.formats or ["onnx"],
        name=args.name,
        version=args.version,
        data=args.data,
        sign_key=args.sign_key,
        gate=not args.no_gate,
        wer_sentences=args.wer_sentences,
        int8_roles=tuple(r.strip() for r in args.int8_graphs.split(",") if r.strip())
        if args.int8_graphs
        else INT8_ROLES,
        max_wer_increase=args.max_wer_increase / 100,
        threads=max(1, args.threads),
        overwrite=args.force,
    )
    return _print_report(run_export(args.run, opts), args.sign_key)


def _print_report(report: dict, sign_key: Path | None) -> int:
    """A family exporter's report (JSON) and where the bundle went."""
    import json

    print(json.dumps({k: v for k, v in report.items() if k != "bundle"}, indent=2))
    print(f"bundle: {report['bundle']}{' (signed)' if sign_key else ''}")
    return 0


def export_rec(args: argparse.Namespace) -> int:
    from edgewise.export.rec import PRECISIONS, RecExportOptions
    from edgewise.export.rec import export_rec as run_export

    unsupported = sorted(set(args.formats or []) - {"onnx"})
    if unsupported:
        raise ConfigError(
            f"a recommender exports to onnx; --format {', '.join(unsupported)} is not supported"
        )
    if args.quant and set(args.quant) != {"dynamic"}:
        raise ConfigError(
            "a recommender's int8 graphs are dynamically quantized: --quant static is not supported"
        )
    if args.gate_users < 0:
        raise ConfigError(f"--gate-users must be 0 (all) or more, got {args.gate_users}")
    if not args.max_ndcg_drop >= 0:
        raise ConfigError(f"--max-ndcg-drop must be >= 0, got {args.max_ndcg_drop}")
    opts = RecExportOptions(
        out=args.out,
        precisions=args.precisions or list(PRECISIONS),
        name=args.name,
        version=args.version,
        data=args.data,
        sign_key=args.sign_key,
        gate=not args.no_gate,
        gate_users=args.gate_users,
        max_ndcg_drop=args.max_ndcg_drop / 100,
        threads=max(1, args.threads),
        overwrite=args.force,
    )
    return _print_report(run_export(args.run, opts), args.sign_key)


def export_ser(args: argparse.Namespace) -> int:
    from edgewise.export.pipeline import ExportOptions
    from edgewise.export.pipeline import export_run as run_export

    opts = ExportOptions(
        out=args.out,
        formats=args.formats or ["onnx"],
        precisions=args.precisions or ["fp32"],
        quant=args.quant,
        name=args.name,
        version=args.version,
        data=args.data,
        sign_key=args.sign_key,
        gate=not args.no_gate,
        atol=_key_values(args.tolerance, "--tolerance"),
        metric_drop=_key_values(args.max_ua_drop, "--max-ua-drop", scale=0.01),
        calibration_size=args.calibration_size,
        window_seconds=args.window_seconds,
        include_vad=not args.no_vad,
        threads=max(1, args.threads),
        overwrite=args.force,
        cache_dir=args.cache_dir,
        progress=sys.stderr.isatty(),
    )
    result = run_export(args.run, opts)
    print(result.report)
    signed = " (signed)" if args.sign_key else ""
    print(f"bundle: {result.bundle}{signed}\narchive: {result.archive}")
    return 0


# --------------------------------------------------------------------------------------------------
# edgewise bundle ...


def bundle_inspect_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="a bundle folder NAME-VERSION/ or its .tar.gz")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON instead")


def bundle_inspect_run(args: argparse.Namespace) -> int:
    """Print the summary (or the manifest), then fail naming every artifact that does not match."""
    from edgewise.bundle import IntegrityError, load_bundle
    from edgewise.export.summary import describe_bundle

    with load_bundle(args.bundle, verify=False, check_artifacts=False) as bundle:
        problems = bundle.problems()
        print(
            bundle.manifest.to_json_bytes().decode()
            if args.json
            else describe_bundle(bundle, args.bundle, problems)
        )
    if problems:
        raise IntegrityError(
            f"{args.bundle}: {len(problems)} artifact(s) do not match the manifest:\n  "
            + "\n  ".join(problems)
        )
    return 0


def bundle_verify_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="a bundle folder or .tar.gz")
    p.add_argument("--key", type=Path, help="ed25519 public key: the signature must verify with it")


def bundle_verify_run(args: argparse.Namespace) -> int:
    from edgewise.bundle import SIGNATURE_NAME, load_bundle

    with load_bundle(args.bundle, verify=True, public_key=args.key) as bundle:
        arts = bundle.artifacts()
        print(
            f"{bundle.manifest.name} {bundle.manifest.version}: manifest valid, {len(arts)} artifact(s) match their sha256"
        )
        if bundle.signature_verified:
            print(f"signature: verified with {args.key}")
        elif (bundle.root / SIGNATURE_NAME).is_file():
            print("signature: present, not checked (pass --key PUB)")
        else:
            print("signature: none")
        failed = [a.path for a in arts if a.parity and not a.parity.get("passed", True)]
        if failed:
            print(
                f"warning: {len(failed)} artifact(s) were written with a failed parity gate: {', '.join(failed)}"
            )
    return 0


def bundle_sign_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "bundle", type=Path, help="a bundle folder NAME-VERSION/ (its .tar.gz beside it is rewritten)"
    )
    p.add_argument("--key", required=True, type=Path, help="ed25519 private key (edgewise bundle keygen)")


def bundle_sign_run(args: argparse.Namespace) -> int:
    from edgewise.bundle import BundleError, load_bundle, sign_manifest, write_archive

    if not args.bundle.is_dir():
        raise BundleError(
            f"{args.bundle}: sign the bundle folder NAME-VERSION/; its .tar.gz is rewritten beside it"
        )
    with load_bundle(args.bundle, verify=True):  # never sign a bundle whose artifacts do not match
        pass
    sign_manifest(args.bundle, args.key)
    archive = args.bundle.with_name(f"{args.bundle.name}.tar.gz")
    print(f"signed {args.bundle / 'manifest.json'}")
    if archive.exists():
        write_archive(args.bundle, archive)
        print(f"rewrote {archive}")
    return 0


def bundle_keygen_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", required=True, type=Path, help="PREFIX: writes PREFIX.key (private) and PREFIX.pub"
    )
    p.add_argument("--force", action="store_true", help="replace existing key files")


def bundle_keygen_run(args: argparse.Namespace) -> int:
    from edgewise.bundle import generate_keypair

    private = args.out.with_name(args.out.name + ".key")
    public = args.out.with_name(args.out.name + ".pub")
    key_id = generate_keypair(private, public, overwrite=args.force)
    print(f"key {key_id}\n  private: {private} (keep secret)\n  public:  {public} (give to devices)")
    return 0
