"""The fixed-window policy shared by the parity gate and the edge runtime."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.edge.windows import FrameRange, WindowSpec, run_windowed, split_windows
from edgewise.errors import ConfigError
from edgewise.features import LogMelConfig, log_mel, num_frames


def _frames(n, mels=3):
    return np.arange(n * mels, dtype=np.float32).reshape(n, mels)


def test_a_short_utterance_is_tiled_from_its_start():
    x = _frames(4)
    windows = split_windows(x, WindowSpec(frames=10, hop=5))
    assert windows.shape == (1, 10, 3)
    np.testing.assert_array_equal(windows[0, :4], x)
    np.testing.assert_array_equal(windows[0, 4:8], x)
    np.testing.assert_array_equal(windows[0, 8:], x[:2])


def test_a_long_utterance_is_chunked_with_the_last_window_at_its_end():
    x = _frames(23)
    windows = split_windows(x, WindowSpec(frames=10, hop=5))
    starts = [int(w[0, 0]) // 3 for w in windows]
    assert starts == [0, 5, 10, 13]
    np.testing.assert_array_equal(windows[-1], x[13:])


def test_an_exact_fit_is_one_window():
    x = _frames(10)
    np.testing.assert_array_equal(split_windows(x, WindowSpec(10, 5))[0], x)


def test_run_windowed_averages_window_logits_per_utterance():
    spec = WindowSpec(frames=4, hop=4)
    calls = []

    def model(window):
        assert window.shape == (1, 4, 3)
        calls.append(window)
        return window.mean(axis=1)  # (1, 3)

    batch = np.stack([_frames(8), _frames(8) + 1])
    out = run_windowed(model, batch, spec)
    assert out.shape == (2, 3) and len(calls) == 4
    np.testing.assert_allclose(out[0], _frames(8).mean(axis=0))
    np.testing.assert_allclose(out[1], _frames(8).mean(axis=0) + 1)


def test_bad_specs_are_refused_with_the_field():
    with pytest.raises(ConfigError, match="frames must be at least 2"):
        WindowSpec(frames=1, hop=1)
    with pytest.raises(ConfigError, match="hop must be between 1 and frames"):
        WindowSpec(frames=10, hop=11)
    with pytest.raises(ConfigError, match="expected"):
        WindowSpec.from_dict({"frames": "many"})
    with pytest.raises(ConfigError, match="seconds must be positive"):
        WindowSpec.from_seconds(0.0, LogMelConfig())
    spec = WindowSpec.from_seconds(3.0, LogMelConfig())
    assert WindowSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("seconds", [1.0, 1.5, 3.0, 4.0])
def test_a_window_holds_exactly_the_frames_of_its_seconds_of_audio(seconds):
    cfg = LogMelConfig()
    spec = WindowSpec.from_seconds(seconds, cfg)
    samples = round(seconds * cfg.sample_rate)
    assert spec.frames == num_frames(samples, cfg) == 1 + samples // cfg.hop_length  # 3 s: 301 frames
    assert spec.hop == spec.frames // 2
    clip = np.random.default_rng(0).standard_normal(samples).astype(np.float32) * 0.1
    feats = log_mel(clip, cfg)
    assert feats.shape[0] == spec.frames
    assert split_windows(feats, spec).shape[0] == 1  # one window, not two
    assert split_windows(log_mel(clip[: samples - cfg.hop_length], cfg), spec).shape[0] == 1
    assert split_windows(log_mel(np.concatenate([clip, clip[: cfg.hop_length]]), cfg), spec).shape[0] == 2


def test_a_frame_range_tiles_to_its_minimum_keeps_what_fits_and_chunks_to_its_maximum():
    frames = FrameRange(min_frames=6, max_frames=10, hop=5)
    short = split_windows(_frames(4), frames)
    assert short.shape == (1, 6, 3)
    np.testing.assert_array_equal(short[0, 4:], _frames(4)[:2])
    for n in (6, 8, 10):
        np.testing.assert_array_equal(split_windows(_frames(n), frames), _frames(n)[None])
    long = split_windows(_frames(23), frames)
    assert [int(w[0, 0]) // 3 for w in long] == [0, 5, 10, 13] and long.shape[1] == 10
    assert FrameRange.halving(50, 3000) == FrameRange(50, 3000, 1500)
    with pytest.raises(ConfigError, match="min_frames <= max_frames"):
        FrameRange(10, 6, 3)
    with pytest.raises(ConfigError, match="hop must be between 1 and max_frames"):
        FrameRange(6, 10, 11)
