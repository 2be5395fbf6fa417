"""Speech emotion recognition on the device: audio -> shared numpy log-mel -> model -> label.

The front-end is :func:`edgewise.features.log_mel` with the parameters and training normalization
the bundle's manifest carries, so the device computes exactly the features the model was trained
and checked on.

A pipeline may be called from several threads at once (the daemon's audio thread and its ``infer``
command): the front-end runs concurrently, the model one call at a time under the pipeline's lock,
since no backend is thread-safe (one TensorRT execution context and its device buffers, one TFLite
interpreter and its tensors).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bundle import Bundle
from edgewise.devices import DeviceProfile
from edgewise.edge.adaptation import AdaptationConfig, SpeakerAdaptation
from edgewise.edge.runtime import ModelRuntime
from edgewise.errors import AudioError, ConfigError
from edgewise.features import log_mel, num_frames

ROLE = "classifier"


@dataclass
class SERResult:
    label: str
    probabilities: dict[str, float]
    audio_seconds: float
    frontend_ms: float
    model_ms: float
    # speaker adaptation (edgewise.edge.adaptation): the speaker, utterances heard before, and the
    # unadapted label and probabilities; None without adaptation
    adaptation: dict[str, Any] | None = None

    @property
    def latency_ms(self) -> float:
        return self.frontend_ms + self.model_ms + float((self.adaptation or {}).get("ms", 0.0))

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "latency_ms": round(self.latency_ms, 3)}
        if out["adaptation"] is None:
            del out["adaptation"]
        return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class SERPipeline:
    task = "ser"
    input_kind = "audio"

    def __init__(self, runtime: ModelRuntime) -> None:
        manifest = runtime.bundle.manifest
        if not manifest.labels:
            raise ConfigError(f"{runtime.bundle.root}: an SER bundle needs labels in its manifest")
        self.runtime = runtime
        self.labels = list(manifest.labels)
        self.features = manifest.log_mel()
        self.min_frames = int(runtime.bundle.model(ROLE).extra.get("min_frames", 2))
        self.sample_rate = self.features.sample_rate
        self._model_lock = threading.Lock()  # the backend runs one call at a time (module docstring)
        self.adaptation: SpeakerAdaptation | None = None  # attached by the daemon (enable_adaptation)

    def enable_adaptation(self, config: AdaptationConfig, state_dir: Path) -> bool:
        """Adapt to each speaker when the bundle carries a speaker adapter; False when it does not."""
        self.adaptation = SpeakerAdaptation.from_bundle(self.runtime.bundle, config, state_dir)
        return self.adaptation is not None

    @classmethod
    def from_bundle(
        cls,
        bundle: str | Path | Bundle,
        profile: DeviceProfile,
        *,
        public_key: str | Path | None = None,
        threads: int | None = None,
        engine_dir: Path | None = None,
    ) -> SERPipeline:
        runtime = ModelRuntime.open(
            bundle, profile, role=ROLE, public_key=public_key, threads=threads, engine_dir=engine_dir
        )
        return cls(runtime)

    @property
    def name(self) -> str:
        return self.runtime.bundle.manifest.name

    @property
    def version(self) -> str:
        return self.runtime.bundle.manifest.version

    def classify(
        self, audio: np.ndarray, sample_rate: int | None = None, *, speaker: str | None = None
    ) -> SERResult:
        """One utterance of float32 mono audio at the bundle's sample rate. With adaptation on,
        ``speaker`` names who speaks (see :mod:`edgewise.edge.adaptation`)."""
        audio = np.asarray(audio, dtype=np.float32)
        logits, frontend_ms, model_ms = self.logits(audio, sample_rate)
        t2 = time.perf_counter()
        probs = softmax(logits.astype(np.float64))
        adaptation = None
        if self.adaptation is not None:
            scores, adaptation = self.adaptation.adapt(audio, logits, self.sample_rate, speaker)
            adaptation["unadapted"] = {"label": self._label(probs), "probabilities": self._rounded(probs)}
            adaptation["ms"] = round((time.perf_counter() - t2) * 1000, 3)
            probs = softmax(scores)
        return SERResult(
            label=self._label(probs),
            probabilities=self._rounded(probs),
            audio_seconds=round(audio.size / self.sample_rate, 3),
            frontend_ms=frontend_ms,
            model_ms=model_ms,
            adaptation=adaptation,
        )

    def logits(self, audio: np.ndarray, sample_rate: int | None = None) -> tuple[np.ndarray, float, float]:
        """The model's class scores for one utterance, with the front-end's and the model's ms."""
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise AudioError(f"expected audio at {self.sample_rate} Hz, got {sample_rate} Hz")
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise AudioError(f"expected mono audio (one dimension), got shape {audio.shape}")
        if num_frames(audio.size, self.features) < self.min_frames:
            raise AudioError(
                f"audio of {audio.size / self.sample_rate * 1000:.0f} ms is too short for the model "
                f"(needs {self.min_frames} frames)"
            )
        t0 = time.perf_counter()
        feats = log_mel(audio, self.features)[None].astype(np.float32)
        with self._model_lock:
            t1 = time.perf_counter()  # model_ms: the model's own time, not the wait for the lock
            logits = np.asarray(self.runtime.backend(feats), dtype=np.float32)[0]
            t2 = time.perf_counter()
        return logits, (t1 - t0) * 1000, (t2 - t1) * 1000

    def _label(self, probs: np.ndarray) -> str:
        return self.labels[int(np.argmax(probs))]

    def _rounded(self, probs: np.ndarray) -> dict[str, float]:
        return {k: round(float(p), 6) for k, p in zip(self.labels, probs)}

    def process(self, item: np.ndarray, *, speaker: str | None = None) -> dict[str, Any]:
        return self.classify(item, speaker=speaker).to_dict()

    def describe(self) -> dict[str, Any]:
        out = {"task": self.task, "bundle": self.name, "version": self.version, **self.runtime.describe()}
        if self.adaptation is not None:
            out["adaptation"] = self.adaptation.describe()
        return out

    def close(self) -> None:
        self.runtime.bundle.close()
