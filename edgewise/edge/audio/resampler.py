"""Block-by-block resampling for live audio (a microphone or a pipe), in numpy.

:func:`edgewise.audio.resample` works on a whole signal by FFT; cutting a live stream into blocks
and resampling each that way leaves a click at every block edge. :class:`StreamResampler` is a
Kaiser-windowed sinc interpolator that carries its history between blocks, so the output does not
depend on how the input was split.
"""

from __future__ import annotations

from math import ceil, gcd

import numpy as np

MAX_PHASES = 4096  # rational ratios with more phases use the nearest of 4096 (error below 1e-4)


def _kaiser(t: np.ndarray, beta: float) -> np.ndarray:
    inside = np.clip(1.0 - t * t, 0.0, None)
    return np.where(np.abs(t) < 1.0, np.i0(beta * np.sqrt(inside)) / np.i0(beta), 0.0)


class StreamResampler:
    """Resample a stream of 1-D blocks from ``sr_in`` to ``sr_out`` with carried state.

    Output sample ``n`` is the band-limited value of the input at time ``n * sr_in / sr_out``
    (no delay). Each call returns what can be computed so far (``zero_crossings`` input samples,
    scaled for downsampling, are held back); :meth:`flush` returns the rest, after which the
    total length is ``ceil(n_in * sr_out / sr_in)``.
    """

    def __init__(
        self, sr_in: int, sr_out: int, *, zero_crossings: int = 16, rolloff: float = 0.94, beta: float = 8.6
    ) -> None:
        if sr_in <= 0 or sr_out <= 0:
            raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
        g = gcd(int(sr_in), int(sr_out))
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._up, self._down = self.sr_out // g, self.sr_in // g
        cutoff = rolloff * min(1.0, self.sr_out / self.sr_in)  # as a fraction of the input Nyquist
        self._half = int(ceil(zero_crossings / cutoff))  # kernel half-width in input samples
        self._offsets = np.arange(-self._half + 1, self._half + 1)
        n_phases = min(self._up, MAX_PHASES)
        frac = np.arange(n_phases) / n_phases
        t = self._offsets[None, :] - frac[:, None]
        self._table = (cutoff * np.sinc(cutoff * t) * _kaiser(t / self._half, beta)).astype(np.float32)
        self._n_phases = n_phases
        self.reset()

    @property
    def passthrough(self) -> bool:
        return self.sr_in == self.sr_out

    def reset(self) -> None:
        self._buf = np.zeros(self._half, dtype=np.float32)  # zeros stand for the time before the stream
        self._buf_start = -self._half  # absolute input index of self._buf[0]
        self._n_in = 0
        self._n_out = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if self.passthrough:
            return block
        self._buf = np.concatenate([self._buf, block])
        self._n_in += block.size
        return self._emit(self._buf_start + self._buf.size - self._half)

    def flush(self) -> np.ndarray:
        """Return the remaining output (the end of the stream is zero-padded) and reset."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        self._buf = np.concatenate([self._buf, np.zeros(self._half, dtype=np.float32)])
        n_total = -(-self._n_in * self._up // self._down)
        out = self._emit(self._n_in, n_total)
        self.reset()
        return out

    def _emit(self, ready_in: int, n_limit: int | None = None) -> np.ndarray:
        """Compute outputs whose centre input index is below ``ready_in`` (all taps available)."""
        n_end = -(-ready_in * self._up // self._down) if ready_in > 0 else 0
        if n_limit is not None:
            n_end = min(n_end, n_limit)
        if n_end <= self._n_out:
            return np.zeros(0, dtype=np.float32)
        n = np.arange(self._n_out, n_end, dtype=np.int64)
        pos = n * self._down
        base, rem = pos // self._up, pos % self._up
        phase = rem * self._n_phases // self._up
        idx = (base - self._buf_start)[:, None] + self._offsets[None, :]
        out = np.einsum("ij,ij->i", self._buf[idx], self._table[phase])
        self._n_out = n_end
        keep_from = (n_end * self._down) // self._up - self._half + 1  # first input the next output needs
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        return out.astype(np.float32)
