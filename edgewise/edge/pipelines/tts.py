"""Text to speech on the device: text -> phonemes -> encoder -> flow decoder (chunked) -> vocoder -> iSTFT.

Three graphs from the bundle, each picked by the device profile (``task_runtimes.tts``):

- ``tts_encoder``: phoneme ids (+ word-boundary and last-word masks) -> per-id mel mean and
  log(1 + frames). Durations are rounded here and the means repeated (length regulation).
- ``tts_flow``: one Euler step of the flow-matching vector field; the ODE loop (``steps``) runs here.
- ``vocoder``: mel -> per-frame log-magnitude and phase; the inverse FFT and overlap-add are
  :class:`edgewise.tts_dsp.StreamingISTFT`.

Streaming: a sentence is encoded whole (cheap), then its mel is decoded in chunks aligned to the
decoder's attention window, each with one window of context on both sides, and vocoded as soon as
the vocoder's receptive field is covered. The first chunk is short, so the first audio comes
after a fraction of the sentence, not after all of it; long sentences are cut at clauses first.

Text handling (documented in the README): text is normalised by :func:`edgewise.textnorm.normalize`
(numbers, currency, dates, abbreviations spelled out; SSML-like tags stripped; emoji and other
scripts dropped and reported). Text with nothing speakable left is a :class:`TextError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bundle import Bundle
from edgewise.devices import DeviceProfile
from edgewise.edge.pipelines import open_task_bundle
from edgewise.edge.runtime import ModelRuntime
from edgewise.errors import ConfigError, DataError
from edgewise.phonemes import PhonemeIds, Phonemizer
from edgewise.textnorm import normalize, split_clauses, split_sentences
from edgewise.tts_dsp import MelSpec, StreamingISTFT

log = logging.getLogger(__name__)

ROLES = ("tts_encoder", "tts_flow", "vocoder")
MAX_TEXT_CHARS = 20_000
MAX_STEPS = 64  # ODE steps a caller may ask for (the bundle's default is a few)
MAX_PIECE_WORDS = 40  # a sentence longer than this is cut at clauses (then every 40 words)
FIRST_CHUNK_WINDOWS = 1
CHUNK_WINDOWS = 4


class TextError(DataError):
    """Text the voice cannot say (empty, nothing speakable after normalisation, too long)."""


@dataclass(frozen=True)
class TTSSettings:
    """What the bundle's ``preprocessing.tts`` says about the voice."""

    mel: MelSpec
    mel_mean: np.ndarray
    mel_std: np.ndarray
    id_map: dict[str, list[int]]
    phonemizer: str
    voice: str
    steps: int
    temperature: float
    window: int  # decoder attention window (frames)
    vocoder_context: int  # vocoder receptive field (frames each side)

    @classmethod
    def from_manifest(cls, pre: dict[str, Any], where: str) -> TTSSettings:
        try:
            tts = pre["tts"]
            mel = MelSpec(**tts["mel"])
            return cls(
                mel=mel,
                mel_mean=np.asarray(tts["mel_mean"], dtype=np.float32),
                mel_std=np.asarray(tts["mel_std"], dtype=np.float32),
                id_map={k: list(v) for k, v in tts["phoneme_id_map"].items()},
                phonemizer=tts["phonemizer"]["backend"],
                voice=tts["phonemizer"].get("voice", "en-us"),
                steps=int(tts["steps"]),
                temperature=float(tts["temperature"]),
                window=int(tts["decoder_window"]),
                vocoder_context=int(tts["vocoder_context"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: preprocessing.tts is missing or malformed ({exc!r})") from None


@dataclass
class Utterance:
    """One synthesis: the audio and what it took."""

    text: str
    spoken_text: str
    audio: np.ndarray
    sample_rate: int
    timings: dict[str, float] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.audio.shape[0] / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "spoken_text": self.spoken_text,
            "audio_seconds": round(self.seconds, 3),
            "sample_rate": self.sample_rate,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "dropped": self.dropped,
            "warnings": self.warnings,
        }


class TTSPipeline:
    task = "tts"
    input_kind = "text"

    def __init__(
        self,
        backends: dict[str, Any],
        settings: TTSSettings,
        phonemizer: Phonemizer,
        runtimes: dict[str, ModelRuntime] | None = None,
    ) -> None:
        """``backends``: role -> a loaded graph with ``run(inputs) -> outputs`` (export checks pass
        files directly; :meth:`from_bundle` picks them through the device profile)."""
        self.runtimes = runtimes or {}
        self.settings = settings
        self.phonemizer = phonemizer
        self.table = PhonemeIds(settings.id_map)
        self.sample_rate = settings.mel.sample_rate
        self._lock = threading.Lock()
        self.encoder = backends["tts_encoder"]
        self.flow = backends["tts_flow"]
        self.vocoder = backends["vocoder"]

    @classmethod
    def from_bundle(
        cls,
        bundle: str | Path | Bundle,
        profile: DeviceProfile,
        *,
        public_key: str | Path | None = None,
        threads: int | None = None,
        phonemizer: str | None = None,
        **_: Any,
    ) -> TTSPipeline:
        bundle = open_task_bundle(bundle, cls.task, "a voice", public_key=public_key)
        settings = TTSSettings.from_manifest(
            bundle.manifest.preprocessing, str(bundle.root / "manifest.json")
        )
        runtimes = {
            role: ModelRuntime.open(bundle, profile, role=role, threads=threads, single_io=False)
            for role in ROLES
        }
        backends = {role: rt.backend for role, rt in runtimes.items()}
        return cls(
            backends, settings, open_phonemizer(phonemizer or settings.phonemizer, settings.voice), runtimes
        )

    # -- text ---------------------------------------------------------------------------------

    def prepare(self, text: str) -> tuple[str, list[str], list[list[str]], list[str]]:
        """(spoken text, dropped characters, phoneme pieces, warnings); TextError when nothing is speakable."""
        check_text(text)
        norm = normalize(text)
        warnings = []
        if norm.dropped:
            shown = "".join(dict.fromkeys(norm.dropped))[:20]
            warnings.append(f"dropped {len(norm.dropped)} character(s) the voice cannot say: {shown!r}")
        if norm.empty:
            raise TextError(
                f"nothing speakable in {text[:60]!r} after normalisation"
                + (f" ({warnings[0]})" if warnings else "")
            )
        pieces: list[list[str]] = []
        for sentence in split_sentences(norm.text):
            for clause in split_clauses(sentence, MAX_PIECE_WORDS):
                for symbols in self.phonemizer.sentences(clause):
                    if any(not s.isspace() for s in symbols):
                        pieces.append(symbols)
        if not pieces:
            raise TextError(f"the phonemizer found nothing to say in {norm.text[:60]!r}")
        return norm.text, norm.dropped, pieces, warnings

    def ids(self, symbols: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids and the two masks the encoder takes (word boundaries, last word)."""
        from edgewise.phonemes import boundary_mask, last_word_mask

        ids, unknown = self.table.ids(symbols)
        if unknown:
            log.debug("symbols not in the voice's table, skipped: %s", unknown)
        arr = np.asarray(ids, dtype=np.int64)
        return arr, boundary_mask(arr, self.table), last_word_mask(arr, self.table)

    # -- models -------------------------------------------------------------------------------

    def encode(self, symbols: list[str], length_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(mu_y (T, n_mels) normalised, durations (N,))."""
        ids, boundary, last = self.ids(symbols)
        mu_x, logd = self.encoder.run({"ids": ids[None], "boundary": boundary[None], "last_word": last[None]})
        durations = np.round(np.maximum(np.exp(logd[0]) - 1.0, 0.0) * length_scale).astype(np.int64)
        if durations.sum() == 0:
            durations[len(durations) // 2] = 1
        return np.repeat(mu_x[0], durations, axis=0), durations

    def decode(self, x: np.ndarray, mu: np.ndarray, steps: int) -> np.ndarray:
        """Euler integration of the flow from x (noise * temperature) to the normalised mel."""
        dt = 1.0 / steps
        for i in range(steps):
            t = np.array([i * dt], dtype=np.float32)
            (v,) = self.flow.run({"x": x[None], "mu": mu[None], "t": t})
            x = x + dt * v[0]
        return x

    def vocode(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_mag, phase = self.vocoder.run({"mel": mel[None].astype(np.float32)})
        return log_mag[0], phase[0]

    # -- synthesis ----------------------------------------------------------------------------

    def stream(
        self,
        text: str,
        *,
        steps: int | None = None,
        temperature: float | None = None,
        seed: int | None = 0,
        length_scale: float = 1.0,
        timings: dict[str, float] | None = None,
        chunked: bool = True,
    ) -> Iterator[np.ndarray]:
        """Audio chunks (float32 mono at ``sample_rate``) as they are ready.

        ``timings`` (if given) is filled with frontend/encoder/decoder/vocoder seconds and
        ``first_audio`` (seconds from the call to the first chunk). ``chunked=False`` decodes each
        sentence whole (the reference the chunked path is checked against).
        """
        t0 = time.perf_counter()
        tm = timings if timings is not None else {}
        _, _, pieces, _ = self.prepare(text)
        tm["frontend"] = tm.get("frontend", 0.0) + time.perf_counter() - t0
        yield from self._stream_pieces(pieces, t0, tm, steps, temperature, seed, length_scale, chunked)

    def _stream_pieces(
        self, pieces, t0, tm, steps, temperature, seed, length_scale, chunked
    ) -> Iterator[np.ndarray]:
        s = self.settings
        steps = s.steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise ConfigError(f"steps must be an integer between 1 and {MAX_STEPS}, got {steps!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"seed must be a non-negative integer or None, got {seed!r}")
        temperature = s.temperature if temperature is None else temperature
        rng = np.random.default_rng(seed)
        for key in ("encoder", "decoder", "vocoder"):
            tm.setdefault(key, 0.0)
        first = True
        with self._lock:
            for symbols in pieces:
                a = time.perf_counter()
                mu, _ = self.encode(symbols, length_scale)
                tm["encoder"] += time.perf_counter() - a
                noise = rng.standard_normal(mu.shape).astype(np.float32) * temperature
                for audio in self._speak(mu, noise, steps, tm, chunked):
                    if first and audio.size:
                        tm["first_audio"] = time.perf_counter() - t0
                        first = False
                    yield audio
        tm["total"] = time.perf_counter() - t0

    def _speak(self, mu, noise, steps, tm, chunked) -> Iterator[np.ndarray]:
        s = self.settings
        w, vctx, total = s.window, s.vocoder_context, mu.shape[0]
        istft = StreamingISTFT(s.mel)
        mel = np.zeros((total, mu.shape[1]), dtype=np.float32)
        vocoded = 0  # mel frames already turned into audio
        bounds = [0, total] if not chunked else _chunk_bounds(total, w)
        for start, end in zip(bounds[:-1], bounds[1:]):
            a = time.perf_counter()
            lo, hi = (max(0, start - w), min(total, end + w)) if chunked else (start, end)
            x = self.decode(noise[lo:hi], mu[lo:hi], steps)
            mel[start:end] = x[start - lo : end - lo] * s.mel_std + s.mel_mean
            tm["decoder"] = tm.get("decoder", 0.0) + time.perf_counter() - a
            # vocode every frame whose right context is decoded (all of them at the end)
            ready = total if end == total else max(vocoded, end - vctx)
            if ready > vocoded:
                a = time.perf_counter()
                clo = max(0, vocoded - vctx)
                log_mag, phase = self.vocode(mel[clo : ready + (vctx if ready < total else 0)])
                part = slice(vocoded - clo, ready - clo)
                audio = istft.push(log_mag[part], phase[part])
                if ready == total:
                    audio = np.concatenate([audio, istft.flush()])
                vocoded = ready
                tm["vocoder"] = tm.get("vocoder", 0.0) + time.perf_counter() - a
                yield np.clip(audio, -1.0, 1.0).astype(np.float32)

    def synthesize(
        self,
        text: str,
        *,
        steps: int | None = None,
        temperature: float | None = None,
        seed: int | None = 0,
        length_scale: float = 1.0,
        chunked: bool = True,
    ) -> Utterance:
        """The whole utterance at once (the chunks of :meth:`stream`, joined), with its timings."""
        t0 = time.perf_counter()
        spoken, dropped, pieces, warnings = self.prepare(text)
        timings = {"frontend": time.perf_counter() - t0}
        chunks = list(
            self._stream_pieces(pieces, t0, timings, steps, temperature, seed, length_scale, chunked)
        )
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if audio.size:
            timings["rtf"] = timings["total"] / (audio.shape[0] / self.sample_rate)
        return Utterance(text, spoken, audio, self.sample_rate, timings, dropped, warnings)

    # -- the daemon's pipeline interface ------------------------------------------------------

    def process(self, item: Any) -> dict[str, Any]:
        utt = self.synthesize(item)
        return {**utt.to_dict(), "audio": utt.audio}

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "backend": ", ".join(f"{role} {rt.artifact.path}" for role, rt in self.runtimes.items())
            or "files",
            "phonemizer": self.phonemizer.backend,
            "steps": self.settings.steps,
            "sample_rate": self.sample_rate,
            **{role: rt.describe() for role, rt in self.runtimes.items()},
        }

    def close(self) -> None:
        self.runtimes.clear()


def check_text(text: Any) -> str:
    """``text`` if it is a string with something in it, within :data:`MAX_TEXT_CHARS`; else a
    TextError (cheap: callers check before loading a voice)."""
    if not isinstance(text, str):
        raise TextError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise TextError("text is empty: nothing to say")
    if len(text) > MAX_TEXT_CHARS:
        raise TextError(f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS} (send it in parts)")
    return text


def _chunk_bounds(total: int, window: int) -> list[int]:
    """Chunk edges on window multiples: one short first chunk (fast first audio), then longer ones."""
    bounds = [0]
    size = FIRST_CHUNK_WINDOWS * window
    while bounds[-1] < total:
        bounds.append(min(total, bounds[-1] + size))
        size = CHUNK_WINDOWS * window
    return bounds


def voice_key(fmt: str, precision: str) -> str:
    """A voice's name: ``fp32``/``int8`` for ONNX graphs, ``tflite-fp32``, ``tflite-int8``."""
    return precision if fmt == "onnx" else f"{fmt}-{precision}"


def voice_sources(voice: str) -> list[tuple[str, str]]:
    """Where a voice takes each role's graph from, in order: its own format and precision, that
    format's fp32 (a graph int8 does not quantize), ONNX fp32 (the TFLite voice's encoder)."""
    fmt, precision = voice.split("-", 1) if "-" in voice else ("onnx", voice)
    return list(dict.fromkeys([(fmt, precision), (fmt, "fp32"), ("onnx", "fp32")]))


def voice_artifacts(bundle: Bundle, voice: str) -> dict[str, Any]:
    """role -> the artifact a named voice (:func:`voice_key`) runs, by :func:`voice_sources`;
    ConfigError naming what is missing."""
    sources = voice_sources(voice)
    picks: dict[str, Any] = {}
    for role in ROLES:
        found = [a for f, p in sources for a in bundle.artifacts(role, format=f, precision=p)]
        if not found:
            have = ", ".join(f"{a.format} {a.precision}" for a in bundle.artifacts(role)) or "nothing"
            raise ConfigError(f"{bundle.root.name}: no {voice} voice: {role} has {have}")
        picks[role] = found[0]
    if not any((a.format, a.precision) == sources[0] for a in picks.values()):
        raise ConfigError(f"{bundle.root.name}: no {voice} artifact in the bundle")
    return picks


def fixed_graph_frames(window: int, vocoder_context: int) -> int:
    """Frames a fixed-length flow or vocoder graph (TFLite) needs for every call :meth:`TTSPipeline._speak`
    makes to fit in one run: a flow chunk with a window of context on both sides, a vocoder span
    with its receptive field on both sides (a multiple of the window)."""
    flow = (CHUNK_WINDOWS + 2) * window
    vocoder = max(
        CHUNK_WINDOWS * window + 2 * vocoder_context, (FIRST_CHUNK_WINDOWS + CHUNK_WINDOWS) * window
    )
    return -(-max(flow, vocoder) // window) * window


def open_phonemizer(backend: str, voice: str = "en-us") -> Phonemizer:
    """The bundle's phonemizer; the system espeak-ng when piper-tts is not installed (with a warning)."""
    try:
        return Phonemizer(backend, voice)
    except ConfigError as exc:
        if backend != "piper":
            raise
        log.warning("%s; falling back to the system espeak-ng (a few symbols may differ from training)", exc)
        return Phonemizer("espeak-ng", voice)
