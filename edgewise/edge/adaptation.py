"""Speaker-adaptive SER on the device: learn each speaker's baseline as their utterances arrive.

The bundle carries the fitted head (``preprocessing.speaker_adaptation``, from ``edgewise train
ser-adapter``; the maths is :mod:`edgewise.speaker_adapt`). This module keeps the per-speaker
running statistics, applies the head to each utterance, and persists the statistics so a restart
(or a power cut) does not forget who the device has heard.

Who is speaking (``speaker:`` in the ``adaptation`` section):

* ``device`` (the default): the device serves one person, every utterance is theirs;
* ``given``: the caller names the speaker (the ``infer`` command's ``speaker``); audio without a
  name (the microphone) is classified with the population's statistics and not counted.

State lives in ``ROOT/adaptation/<bundle name>.json`` (written atomically after each utterance). It
records the head's sha256: a bundle with another head (another model's logits) starts afresh. The
``adaptation`` command shows the state and resets one speaker or all of them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgewise.bundle import Bundle, bundle_file
from edgewise.config import StrictModel
from edgewise.errors import ConfigError, EdgewiseError
from edgewise.fsutil import write_text_atomic
from edgewise.speaker_adapt import AdapterHead, SpeakerStats, normalize

log = logging.getLogger(__name__)

STATE_FORMAT = "edgewise-speaker-state/1"
DEVICE_SPEAKER = "device"
SPEAKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AdaptationConfig(StrictModel):
    """``adaptation:`` in ``daemon.yaml``: speaker-adaptive SER (used when the bundle has a head)."""

    enabled: bool = True
    speaker: Literal["device", "given"] = "device"
    horizon: float = Field(200.0, ge=2)  # utterances a speaker's statistics remember (older ones fade)
    max_speakers: int = Field(64, ge=1)  # beyond this, the speaker heard least recently is forgotten
    state_dir: Path | None = None  # default: ROOT/adaptation


def check_speaker(value: Any, where: str) -> str:
    if not isinstance(value, str) or not SPEAKER_NAME.match(value):
        raise ConfigError(
            f"{where} must be 1-64 letters, digits, '.', '_', '@' or '-' (starting with a letter or "
            f"digit), got {value!r}"
        )
    return value


class SpeakerAdaptation:
    """The per-speaker statistics of one bundle's head, applied utterance by utterance."""

    def __init__(
        self, head: AdapterHead, head_sha256: str, config: AdaptationConfig, state_path: Path
    ) -> None:
        self.head = head
        self.head_sha256 = head_sha256
        self.config = config
        self.state_path = state_path
        self.speakers: dict[str, SpeakerStats] = {}
        # write the state after each utterance (a benchmark replaying many orders turns it off)
        self.persist = True
        self._lock = threading.Lock()
        self._load_state()

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, config: AdaptationConfig, state_dir: Path
    ) -> SpeakerAdaptation | None:
        """The bundle's adaptation, or None when the bundle has no head (a warning says so)."""
        record = bundle.manifest.preprocessing.get("speaker_adaptation")
        if record is None:
            log.warning(
                "%s: the bundle has no speaker adapter (edgewise train ser-adapter); classifying without "
                "speaker adaptation",
                bundle.manifest.name,
            )
            return None
        where = "preprocessing.speaker_adaptation.file"
        path = bundle_file(bundle, record.get("file") or {}, where)
        try:
            head = AdapterHead.load(path)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if list(head.labels) != list(bundle.manifest.labels or []):
            raise ConfigError(
                f"{path}: the head's labels {head.labels} are not the bundle's {bundle.manifest.labels}"
            )
        return cls(head, record["file"]["sha256"], config, state_dir / f"{bundle.manifest.name}.json")

    # ----------------------------------------------------------------------------------------------

    def adapt(
        self, audio: np.ndarray, logits: np.ndarray, sample_rate: int, speaker: str | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Adapted class scores for one utterance, and what was used: the speaker, how many of their
        utterances were heard before this one, and the reliability of their statistics."""
        return self.adapt_features(self.head.features(audio, logits, sample_rate), speaker)

    def adapt_features(self, x: np.ndarray, speaker: str | None) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`adapt` from the utterance's scaled features (``head.features``)."""
        if speaker is None and self.config.speaker == "device":
            speaker = DEVICE_SPEAKER
        with self._lock:
            if speaker is None:  # ``given`` and nobody named: the population's statistics, nothing counted
                z, reliability = normalize(x, 1.0, x.copy(), x**2, self.head.prior_weight)
                heard = 0
            else:
                stats = self.speakers.get(speaker)
                if stats is None:
                    stats = self.speakers[speaker] = SpeakerStats()
                heard = stats.heard
                stats.add(x, self.config.horizon)
                stats.last_seen = time.time()
                self._evict(keep=speaker)
                z, reliability = normalize(
                    x, stats.count, stats.total, stats.total_sq, self.head.prior_weight
                )
                if self.persist:
                    self._save_state()
        scores = self.head.scores(z, reliability)
        return scores, {"speaker": speaker, "heard": heard, "reliability": round(float(reliability), 4)}

    def reset(self, speaker: str | None = None) -> list[str]:
        """Forget one speaker (or everyone); returns who was forgotten."""
        with self._lock:
            if speaker is None:
                gone = sorted(self.speakers)
                self.speakers.clear()
            elif speaker in self.speakers:
                gone = [speaker]
                del self.speakers[speaker]
            else:
                raise ConfigError(
                    f"adaptation: no statistics for speaker {speaker!r}; known: {sorted(self.speakers)}"
                )
            self._save_state()
        log.info("speaker adaptation reset: %s", ", ".join(gone) or "nobody was known")
        return gone

    def describe(self) -> dict[str, Any]:
        with self._lock:
            speakers = {
                name: {"heard": s.heard, "weight": round(s.count, 2), "last_seen": round(s.last_seen, 3)}
                for name, s in sorted(self.speakers.items())
            }
        return {
            "speaker": self.config.speaker,
            "horizon": self.config.horizon,
            "prior_weight": self.head.prior_weight,
            "state": str(self.state_path),
            "speakers": speakers,
        }

    # ----------------------------------------------------------------------------------------------

    def _evict(self, keep: str) -> None:
        while len(self.speakers) > self.config.max_speakers:
            others = [name for name in self.speakers if name != keep]
            oldest = min(others, key=lambda name: self.speakers[name].last_seen)
            log.info(
                "speaker adaptation: forgetting %s (more than %d speakers)", oldest, self.config.max_speakers
            )
            del self.speakers[oldest]

    def _save_state(self) -> None:
        state = {
            "format": STATE_FORMAT,
            "head_sha256": self.head_sha256,
            "speakers": {name: s.to_json() for name, s in self.speakers.items()},
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.state_path, json.dumps(state) + "\n")

    def _load_state(self) -> None:
        """Read the saved statistics; a file that is unreadable, another format, or another head's is
        set aside (renamed ``.bad``, with a warning) and the device starts afresh."""
        path = self.state_path
        if not path.is_file():
            return
        try:
            data = json.loads(path.read_text())
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {STATE_FORMAT!r}")
            if data.get("head_sha256") != self.head_sha256:
                log.info("%s: statistics of another model's head; starting afresh", path)
                return
            self.speakers = {
                check_speaker(name, f"{path}: speaker"): SpeakerStats.from_json(
                    stats, self.head.dim, f"{path}: speaker {name}"
                )
                for name, stats in data["speakers"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EdgewiseError) as exc:
            bad = path.with_suffix(".bad")
            log.warning(
                "%s: unusable speaker statistics (%s); set aside as %s, starting afresh", path, exc, bad.name
            )
            path.replace(bad)
            self.speakers = {}
