"""Cut a live 16 kHz stream into utterances with a VAD.

:class:`UtteranceSegmenter` takes blocks of any size, scores them with a :class:`StreamingVAD`
on its fixed 512-sample grid, and returns each utterance as soon as it is over:

- speech starts at the first window whose probability reaches ``threshold``;
- it ends after ``min_silence_s`` of windows below ``neg_threshold`` (hysteresis; default
  ``threshold - 0.15``); windows in between neither start nor end speech;
- utterances shorter than ``min_speech_s`` are dropped;
- ``speech_pad_s`` of audio is kept on each side (never overlapping the previous utterance, and at
  most ``min_silence_s`` after the end, so an utterance is never held back waiting for audio);
- an utterance about to exceed ``max_utterance_s`` (padding included) is split at the longest
  pause in its second half, or at the limit if it has none, and the rest continues as the next
  utterance; no utterance's audio is longer than ``max_utterance_s``;
- :meth:`flush` (end of stream) returns the utterance in progress.

Sample positions count from the first sample pushed since the last :meth:`flush` or :meth:`reset`.
The result does not depend on how the stream is split into blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edgewise.edge.audio.vad import SAMPLE_RATE, WINDOW_SAMPLES, StreamingVAD

if TYPE_CHECKING:
    from edgewise.edge.audio.config import AudioInputConfig


@dataclass
class Utterance:
    """One stretch of speech: ``audio`` is samples ``[start, end)`` of the stream (padding included).

    ``speech_start``/``speech_end`` are the VAD's boundaries, without padding: on its 32 ms grid,
    except that an utterance still going at the end of the stream ends with the stream.
    """

    start: int
    end: int
    audio: np.ndarray = field(repr=False)
    speech_start: int = 0
    speech_end: int = 0
    sample_rate: int = SAMPLE_RATE
    forced_split: bool = False  # ended by max_utterance_s rather than by silence

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / self.sample_rate


@dataclass
class SegmenterStats:
    utterances: int = 0
    dropped_short: int = 0
    forced_splits: int = 0


class _SampleBuffer:
    """Recent stream samples kept as a list of blocks, addressed by absolute sample index."""

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self.start = 0  # absolute index of the first kept sample
        self.end = 0  # absolute index one past the last sample

    def append(self, block: np.ndarray) -> None:
        if block.size:
            self._blocks.append(block)
            self.end += block.size

    def slice(self, a: int, b: int) -> np.ndarray:
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return np.zeros(0, dtype=np.float32)
        data = np.concatenate(self._blocks) if len(self._blocks) > 1 else self._blocks[0]
        if len(self._blocks) > 1:
            self._blocks = [data]
        return data[a - self.start : b - self.start].copy()

    def discard_before(self, index: int) -> None:
        while self._blocks and self.start + self._blocks[0].size <= index:
            self.start += self._blocks.pop(0).size
        if self._blocks and index > self.start:
            self._blocks[0] = self._blocks[0][index - self.start :]
            self.start = index
        if not self._blocks:
            self.start = max(self.start, min(index, self.end))


class UtteranceSegmenter:
    """Streaming utterance detection; see the module docstring for the rules.

    ``vad=None`` treats every window as speech (the stream is cut only by ``max_utterance_s``).
    """

    def __init__(
        self,
        vad: StreamingVAD | None,
        *,
        threshold: float | None = None,
        neg_threshold: float | None = None,
        min_speech_s: float = 0.25,
        min_silence_s: float = 0.4,
        speech_pad_s: float = 0.1,
        max_utterance_s: float = 10.0,
    ) -> None:
        self.vad = vad
        self.sample_rate = vad.sample_rate if vad is not None else SAMPLE_RATE
        self.window = vad.window_samples if vad is not None else WINDOW_SAMPLES
        self.threshold = threshold if threshold is not None else (vad.threshold if vad is not None else 0.5)
        self.neg_threshold = neg_threshold if neg_threshold is not None else max(self.threshold - 0.15, 0.01)
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ValueError(
                f"need 0 < neg_threshold <= threshold < 1, got {self.neg_threshold}, {self.threshold}"
            )
        sr = self.sample_rate
        self.min_speech = int(round(min_speech_s * sr))
        self.min_silence = max(int(round(min_silence_s * sr)), 1)
        self.pad = int(round(speech_pad_s * sr))
        self.max_len = int(round(max_utterance_s * sr))
        if self.max_len <= self.pad + self.min_speech + self.window:
            raise ValueError(
                f"max_utterance_s ({max_utterance_s}) must exceed speech_pad_s + min_speech_s + "
                f"{self.window / sr:.3f} s"
            )
        self.stats = SegmenterStats()
        self._reset_stream()

    @classmethod
    def from_config(cls, config: AudioInputConfig, vad: StreamingVAD | None) -> UtteranceSegmenter:
        return cls(
            vad,
            threshold=config.threshold,
            neg_threshold=config.neg_threshold,
            min_speech_s=config.min_speech_s,
            min_silence_s=config.min_silence_s,
            speech_pad_s=config.speech_pad_s,
            max_utterance_s=config.max_utterance_s,
        )

    # --- public -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop the stream in progress without emitting anything."""
        self._reset_stream()

    def push(self, block: np.ndarray) -> list[Utterance]:
        """Add a block of 16 kHz mono audio; return the utterances it completed (often none)."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self._buf.append(block)
        if self.vad is not None:
            probs = self.vad.probabilities(block)
        else:
            n_new = self._buf.end // self.window - self._next_window
            probs = np.ones(n_new, dtype=np.float32)
        done: list[Utterance] = []
        for p in probs:
            self._step(float(p), done)
        self._trim()
        return done

    def flush(self) -> list[Utterance]:
        """End of stream: return the utterance in progress (if long enough) and start afresh."""
        done: list[Utterance] = []
        if self._start is not None:
            end = self._buf.end
            if self._quiet_from is not None:
                self._close(self._start, self._quiet_from, min(end, self._quiet_from + self.pad), done)
            else:
                self._close(self._start, end, end, done)
        self._reset_stream()
        return done

    def segment(self, blocks: Iterable[np.ndarray]) -> Iterator[Utterance]:
        """Every utterance of a finite stream, the last one included."""
        for block in blocks:
            yield from self.push(block)
        yield from self.flush()

    # --- state machine ------------------------------------------------------------------------

    def _reset_stream(self) -> None:
        if self.vad is not None:
            self.vad.reset()
        self._buf = _SampleBuffer()
        self._next_window = 0  # index of the next window to classify
        self._last_end = 0  # end (padding included) of the last emitted utterance
        self._start: int | None = None  # speech start of the utterance in progress
        self._quiet_from: int | None = None  # start of the current run of quiet windows
        self._best_pause: tuple[int, int] | None = None  # (length, start) of the longest pause

    def _step(self, p: float, done: list[Utterance]) -> None:
        w0 = self._next_window * self.window
        w1 = w0 + self.window
        self._next_window += 1
        if self._start is None:
            if p >= self.threshold:
                self._start, self._quiet_from, self._best_pause = w0, None, None
            return
        if p >= self.threshold:
            self._note_pause(w0)
            self._quiet_from = None
        elif p < self.neg_threshold and self._quiet_from is None:
            self._quiet_from = w0
        if self._quiet_from is not None and w1 - self._quiet_from >= self.min_silence:
            speech_end = self._quiet_from
            self._close(self._start, speech_end, speech_end + min(self.pad, w1 - speech_end), done)
            self._start = self._quiet_from = None
        elif w1 + self.window - max(self._start - self.pad, self._last_end) > self.max_len:
            self._force_split(w1, done)  # one more window would make the audio longer than max_len

    def _note_pause(self, pause_end: int) -> None:
        """Remember the quiet run ending at ``pause_end`` if it is the longest in the second half."""
        if self._quiet_from is None or self._quiet_from - self._start < self.max_len // 2:
            return
        length = pause_end - self._quiet_from
        if self._best_pause is None or length > self._best_pause[0]:
            self._best_pause = (length, self._quiet_from, pause_end)

    def _force_split(self, now: int, done: list[Utterance]) -> None:
        self.stats.forced_splits += 1
        self._note_pause(now)  # a pause still running is a candidate too
        pause, self._best_pause = self._best_pause, None
        if pause is None:  # no pause to cut at: cut here and carry on without a gap
            self._close(self._start, now, now, done, forced=True)
            self._start = now
            if self._quiet_from is not None:
                self._quiet_from = now
            return
        _, q0, q1 = pause
        self._close(self._start, q0, q0 + min(self.pad, (q1 - q0) // 2), done, forced=True)
        if q1 == now:  # the pause is still running: the next utterance starts with the next speech
            self._start = self._quiet_from = None
        else:  # speech resumed at q1: that is where the next utterance starts
            self._start = q1

    def _close(
        self, start: int, speech_end: int, end: int, done: list[Utterance], forced: bool = False
    ) -> None:
        if speech_end - start < self.min_speech:
            self.stats.dropped_short += 1
            return
        a = max(start - self.pad, self._last_end)
        audio = self._buf.slice(a, end)
        done.append(Utterance(a, a + audio.size, audio, start, speech_end, self.sample_rate, forced))
        self._last_end = a + audio.size
        self.stats.utterances += 1

    def _trim(self) -> None:
        if self._start is not None:
            keep = max(self._start - self.pad, self._last_end)
        else:
            keep = max(self._next_window * self.window - self.pad, self._last_end)
        self._buf.discard_before(keep)
