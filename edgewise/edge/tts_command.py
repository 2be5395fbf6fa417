"""``edgewise tts BUNDLE "text" --out speech.wav``: speak once with a TTS bundle, torch-free.

Prints the timings (first audio, real-time factor, per stage), or the whole result with ``--json``;
``--play`` also plays it (without a sound card it says why it did not). Text ``-`` reads stdin.
Text the voice cannot say (empty, nothing speakable, too long) is exit 2 with one message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def tts_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="a tts bundle folder or .tar.gz")
    p.add_argument("text", help="what to say (- reads it from stdin)")
    p.add_argument("--out", type=Path, help="wav file to write (22.05 kHz PCM16)")
    p.add_argument("--play", action="store_true", help="play it through the default sound card")
    p.add_argument(
        "--device", default="x86-local", help="device profile that picks the artifacts (default: x86-local)"
    )
    p.add_argument("--key", type=Path, help="the fleet's public key: refuse a bundle it did not sign")
    p.add_argument("--threads", type=int, help="runtime threads (default: the profile's)")
    p.add_argument("--steps", type=int, help="ODE steps (default: the bundle's)")
    p.add_argument(
        "--seed", type=int, default=0, help="noise seed (default: 0; the same seed gives the same audio)"
    )
    p.add_argument("--phonemizer", choices=["piper", "espeak-ng"], help="override the bundle's phonemizer")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def tts_run(args: argparse.Namespace) -> int:
    from edgewise.audio import write_wav
    from edgewise.devices import load_profile
    from edgewise.edge.pipelines.tts import MAX_STEPS, TTSPipeline, check_text
    from edgewise.edge.speech import play_audio
    from edgewise.errors import ConfigError

    if args.out is None and not args.play:
        raise ConfigError("say where the audio goes: --out FILE.wav and/or --play")
    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        raise ConfigError(f"--steps must be between 1 and {MAX_STEPS}, got {args.steps}")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be between 0 and {2**32 - 1}, got {args.seed}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    if args.out is not None and not args.out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: folder {args.out.parent} does not exist")
    text = check_text(sys.stdin.read() if args.text == "-" else args.text)  # before loading the voice
    pipeline = TTSPipeline.from_bundle(
        args.bundle,
        load_profile(args.device),
        public_key=args.key,
        threads=args.threads,
        phonemizer=args.phonemizer,
    )
    utterance = pipeline.synthesize(text, steps=args.steps, seed=args.seed)
    result = utterance.to_dict()
    if args.out is not None:
        write_wav(args.out, utterance.audio, utterance.sample_rate)
        result["out"] = str(args.out)
    if args.play:
        result["played"] = play_audio(utterance.audio, utterance.sample_rate)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        t = utterance.timings
        print(
            f"{utterance.seconds:.2f} s of audio in {t['total']:.3f} s (RTF {t.get('rtf', 0):.3f}); "
            f"first audio after {t.get('first_audio', t['total']):.3f} s"
            + (f"; wrote {args.out}" if args.out else "")
        )
        for warning in utterance.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.play and result["played"] != "played":
            print(f"warning: {result['played']}", file=sys.stderr)
    return 0
