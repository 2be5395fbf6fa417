"""Speaking on the device: ``edgewise tts`` and the daemon's ``tts`` command share this.

:func:`check_tts_args` validates a command's arguments up front (so a bad one is the ack's error,
not a crash); :func:`play_audio` plays through sounddevice when a sound card is there and says
why not otherwise; :func:`keep_recent` bounds the folder of spoken wavs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.edge.command_args import check_command_args
from edgewise.edge.pipelines.tts import MAX_STEPS, MAX_TEXT_CHARS
from edgewise.errors import ConfigError

log = logging.getLogger(__name__)
TTS_ARGS = {"text", "play", "seed", "steps", "length_scale"}


def check_tts_args(args: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
    """(text, synthesis options, play) from a ``tts`` command's args; ConfigError names what is wrong."""
    args = check_command_args("tts", args, TTS_ARGS, {"text": "the text to say"}, ConfigError)
    text = args["text"]
    if not isinstance(text, str):
        raise ConfigError(f"tts: args.text must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ConfigError(f"tts: args.text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    play = args.get("play", False)
    if not isinstance(play, bool):
        raise ConfigError(f"tts: args.play must be true or false, got {play!r}")
    options: dict[str, Any] = {}
    for name, kind, low, high in (
        ("seed", int, 0, 2**32 - 1),
        ("steps", int, 1, MAX_STEPS),
        ("length_scale", float, 0.25, 4.0),
    ):
        if name in args:
            value = args[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (kind is int and not isinstance(value, int))
            ):
                raise ConfigError(f"tts: args.{name} must be a {kind.__name__}, got {value!r}")
            if not low <= value <= high:
                raise ConfigError(f"tts: args.{name} must be between {low} and {high}, got {value}")
            options[name] = kind(value)
    return text, options, play


def play_audio(audio: np.ndarray, sample_rate: int) -> str:
    """Play and wait; returns "played" or the reason it could not (no sounddevice, no output device)."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:
        return f"not played: sounddevice is unavailable ({exc})"
    try:
        sd.play(audio, sample_rate)
        sd.wait()
    except Exception as exc:  # PortAudioError and friends: no device, busy device
        return f"not played: {type(exc).__name__}: {exc}"
    return "played"


def keep_recent(folder: Path, keep: int) -> None:
    files = sorted(folder.glob("*.wav"), key=lambda p: p.stat().st_mtime)
    for old in files[:-keep] if keep else files:
        old.unlink(missing_ok=True)
