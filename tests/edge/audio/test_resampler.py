"""StreamResampler: band-limited, and the output does not depend on how the input is split."""

import numpy as np
import pytest

from edgewise.audio import StreamResampler


def tones(sr, seconds=1.0, freqs=(440.0, 1000.0, 3100.0)):
    t = np.arange(int(sr * seconds)) / sr
    return sum(0.25 * np.sin(2 * np.pi * f * t) for f in freqs).astype(np.float32)


def run(resampler, x, sizes):
    out, i = [], 0
    for size in sizes:
        out.append(resampler.process(x[i : i + size]))
        i += size
        if i >= x.size:
            break
    out.append(resampler.process(x[i:]))
    out.append(resampler.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("sr_in", [44100, 48000, 22050, 8000])
def test_tones_come_out_at_16k_within_1e_3(sr_in):
    x = tones(sr_in)
    y = run(StreamResampler(sr_in, 16000), x, [x.size])
    assert y.size == int(np.ceil(x.size * 16000 / sr_in))
    expected = tones(16000)[: y.size]
    middle = slice(100, -100)  # the ends see the zero padding before and after the stream
    assert np.max(np.abs(y[middle] - expected[middle])) < 1e-3


def test_block_boundaries_leave_no_trace():
    x = tones(44100, 2.0)
    rng = np.random.default_rng(1)
    whole = run(StreamResampler(44100, 16000), x, [x.size])
    ragged = run(StreamResampler(44100, 16000), x, rng.integers(1, 3000, size=500).tolist())
    np.testing.assert_array_equal(ragged, whole)


def test_content_above_the_new_nyquist_is_removed():
    t = np.arange(44100) / 44100
    y = run(StreamResampler(44100, 16000), np.sin(2 * np.pi * 10000 * t).astype(np.float32), [44100])
    level_db = 20 * np.log10(np.sqrt(np.mean(y[200:-200] ** 2)) / np.sqrt(0.5) + 1e-12)
    assert level_db < -60


def test_same_rate_passes_blocks_through_unchanged():
    x = tones(16000, 0.1)
    r = StreamResampler(16000, 16000)
    np.testing.assert_array_equal(r.process(x), x)
    assert r.flush().size == 0
