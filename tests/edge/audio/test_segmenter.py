"""UtteranceSegmenter: real speech with both VADs, block-size independence, and each rule on a
scripted probability sequence."""

import numpy as np
import pytest

from edgewise.edge.audio.segmenter import UtteranceSegmenter
from edgewise.edge.audio.vad import EnergyVAD, SileroVAD, StreamingVAD
from tests.edge.audio.conftest import SR, assert_matches_known, speech_spans

W = 512


class ScriptedVAD(StreamingVAD):
    """Probabilities read off the audio: a window's probability is its mean sample value."""

    name = "scripted"

    def _score(self, windows):
        return windows.mean(axis=1)


def script(*runs):
    """Audio whose windows carry the given probabilities: runs of (probability, n_windows)."""
    return np.concatenate([np.full(n * W, p, dtype=np.float32) for p, n in runs])


def segment(audio, block=W, **kwargs):
    seg = UtteranceSegmenter(ScriptedVAD(), **kwargs)
    return list(seg.segment(audio[i : i + block] for i in range(0, audio.size, block))), seg


def spans(utterances):
    return [(u.speech_start // W, u.speech_end // W) for u in utterances]


# --- real speech -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["silero", "energy"])
def test_three_sentences_give_three_utterances_at_the_known_times(kind, silero_onnx, speech_track):
    vad = SileroVAD(silero_onnx) if kind == "silero" else EnergyVAD()
    seg = UtteranceSegmenter(vad, min_silence_s=0.4, speech_pad_s=0.1)
    audio = speech_track.audio
    utterances = list(seg.segment(audio[i : i + 1600] for i in range(0, audio.size, 1600)))
    assert_matches_known(speech_spans(utterances), speech_track)
    for u in utterances:
        np.testing.assert_array_equal(u.audio, audio[u.start : u.end])  # the stream's own samples
        assert u.start == u.speech_start - int(0.1 * SR)  # padding before
        assert 0 < u.end - u.speech_end <= int(0.1 * SR)  # padding after
        assert not u.forced_split


def test_the_result_does_not_depend_on_block_size(silero_onnx, speech_track):
    audio = speech_track.audio
    results = []
    for block in (37, 1600, audio.size):
        seg = UtteranceSegmenter(SileroVAD(silero_onnx))
        found = list(seg.segment(audio[i : i + block] for i in range(0, audio.size, block)))
        results.append([(u.start, u.end, u.speech_start, u.speech_end, u.audio.tobytes()) for u in found])
    assert len(results[0]) == 3 and results[0] == results[1] == results[2]


# --- the rules, one at a time --------------------------------------------------------------------


def test_speech_ends_only_after_min_silence():
    # 0.4 s = 12.5 windows -> 13 quiet windows end speech; a 10-window pause does not.
    audio = script((0, 5), (0.9, 20), (0, 10), (0.9, 20), (0, 13), (0.9, 20), (0, 20))
    utterances, _ = segment(audio, min_silence_s=0.4)
    assert spans(utterances) == [(5, 55), (68, 88)]


def test_probabilities_between_the_thresholds_keep_speech_going():
    # threshold 0.5, neg_threshold 0.35: 0.4 neither starts nor ends speech.
    audio = script((0.4, 10), (0.9, 10), (0.4, 30), (0.9, 10), (0, 20))
    utterances, _ = segment(audio, min_silence_s=0.2)
    assert spans(utterances) == [(10, 60)]


def test_short_blips_are_dropped():
    audio = script((0, 10), (0.9, 5), (0, 20), (0.9, 20), (0, 20))  # 5 windows = 0.16 s
    utterances, seg = segment(audio, min_speech_s=0.25, min_silence_s=0.2)
    assert spans(utterances) == [(35, 55)] and seg.stats.dropped_short == 1


def test_padding_never_reaches_into_the_previous_utterance():
    audio = script((0.9, 20), (0, 8), (0.9, 20), (0, 20))
    utterances, _ = segment(audio, min_silence_s=0.2, speech_pad_s=0.2)  # 6.25 windows of pad
    first, second = utterances
    assert first.start == 0 and first.end == 20 * W + int(0.2 * SR)
    assert second.start == first.end and second.speech_start == 28 * W


def test_a_long_utterance_is_split_at_its_longest_late_pause():
    # max 2 s = 62.5 windows; pauses of 4 windows at 10 (first half: ignored) and 3, 6 at 35, 45.
    audio = script((0.9, 10), (0.1, 4), (0.9, 21), (0.1, 3), (0.9, 7), (0.1, 6), (0.9, 30), (0, 20))
    utterances, seg = segment(audio, max_utterance_s=2.0, min_silence_s=0.4, speech_pad_s=0.0)
    assert spans(utterances) == [(0, 45), (51, 81)]
    assert utterances[0].forced_split and not utterances[1].forced_split
    assert seg.stats.forced_splits == 1


def test_without_a_pause_the_cut_is_at_the_limit_and_nothing_is_lost():
    audio = script((0, 4), (0.9, 150), (0, 20))
    utterances, _ = segment(audio, max_utterance_s=2.0, speech_pad_s=0.1)
    assert [u.forced_split for u in utterances] == [True, True, False]
    assert all(u.end - u.start <= 2.0 * SR for u in utterances)
    joined = np.concatenate([u.audio for u in utterances])
    np.testing.assert_array_equal(joined, audio[utterances[0].start : utterances[-1].end])


def test_flush_returns_the_utterance_in_progress():
    audio = script((0, 10), (0.9, 30))
    audio = np.concatenate([audio, np.full(100, 0.9, dtype=np.float32)])  # and a partial window
    utterances, _ = segment(audio, block=1000)
    assert len(utterances) == 1 and utterances[0].end == audio.size


def test_flush_starts_a_fresh_stream():
    seg = UtteranceSegmenter(ScriptedVAD(), min_silence_s=0.2)
    first = seg.push(script((0, 3), (0.9, 20), (0, 10))) + seg.flush()
    second = seg.push(script((0, 3), (0.9, 20), (0, 10))) + seg.flush()
    assert spans(first) == spans(second) == [(3, 23)]


def test_without_a_vad_the_stream_is_cut_every_max_utterance():
    audio = np.zeros(5 * SR, dtype=np.float32)
    seg = UtteranceSegmenter(None, max_utterance_s=2.0)
    utterances = list(seg.segment([audio]))
    assert [round(u.duration_s, 2) for u in utterances] == [1.98, 1.98, 1.03]  # on the 32 ms grid
    assert sum(u.audio.size for u in utterances) == audio.size


def test_inconsistent_thresholds_are_refused():
    with pytest.raises(ValueError, match="neg_threshold <= threshold"):
        UtteranceSegmenter(ScriptedVAD(), threshold=0.3, neg_threshold=0.6)
