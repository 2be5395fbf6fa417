"""CLI handlers: ``edgewise train tts`` and ``edgewise train vocoder``. Torch is imported inside ``run``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgewise.config import add_override_arguments


def _common(p: argparse.ArgumentParser, presets: str) -> None:
    p.add_argument(
        "--config", default="tiny", help=f"a shipped preset ({presets}) or a YAML path (default: tiny)"
    )
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="TTS corpus: edgewise data tts output, or an LJSpeech or VCTK root",
    )
    p.add_argument("--out", required=True, type=Path, help="run directory to create")
    add_override_arguments(p, "--set optim.steps=8000 --set model.hrf=null")
    p.add_argument("--resume", action="store_true", help="continue from checkpoints/last.safetensors")
    p.add_argument("--no-progress", action="store_true", help="quieter log")


def train_tts_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train the prosody-aware flow-matching acoustic model (phonemes -> mel) with HRF, from a "
        "teacher-distilled corpus (sequence-level distillation: the targets are the teacher's audio)."
    )
    _common(p, "tiny, base")
    p.add_argument("--vocoder", type=Path, help="a vocoder run: adds word error rate to each evaluation")


def train_vocoder_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Train the Vocos-style iSTFT vocoder (mel -> waveform) on a TTS corpus's audio, with HRF."
    _common(p, "tiny, base")


def _overrides(args) -> list[str]:
    return list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])


def train_tts_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.models.tts.config import resolve_tts_config
    from edgewise.cloud.train.acoustic_job import build_acoustic_job
    from edgewise.cloud.train.step_loop import StepTrainOptions, run_job

    cfg = resolve_tts_config(args.config, _overrides(args))
    opts = StepTrainOptions(
        args.data, args.out, args.resume, not args.no_progress and sys.stderr.isatty(), args.vocoder
    )
    metrics = run_job(cfg, opts, build_acoustic_job)
    if metrics:
        print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}, indent=2))
    return 0


def train_vocoder_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.models.tts.config import resolve_tts_config
    from edgewise.cloud.train.step_loop import StepTrainOptions, run_job
    from edgewise.cloud.train.vocoder_job import build_vocoder_job

    cfg = resolve_tts_config(args.config, _overrides(args), vocoder=True)
    opts = StepTrainOptions(args.data, args.out, args.resume, not args.no_progress and sys.stderr.isatty())
    metrics = run_job(cfg, opts, build_vocoder_job)
    if metrics:
        print(json.dumps(metrics, indent=2))
    return 0
