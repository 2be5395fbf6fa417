"""The speaker-adaptation maths shared by the cloud fit and the device: statistics, the head file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgewise import prosody
from edgewise.speaker_adapt import FORMAT, AdapterHead, SpeakerStats, normalize, simulate_heard

LABELS = ["neutral", "happy", "sad", "angry"]
DIM = len(prosody.NAMES) + len(LABELS)


def make_head(seed: int = 0) -> AdapterHead:
    rng = np.random.default_rng(seed)
    return AdapterHead(
        labels=LABELS,
        scale_mean=rng.normal(size=DIM),
        scale_std=rng.uniform(0.5, 2.0, DIM),
        weights=rng.normal(size=(len(LABELS), DIM + 1)),
        bias=rng.normal(size=len(LABELS)),
        prior_weight=3.0,
    )


def test_with_nothing_heard_the_population_statistics_apply():
    x = np.array([2.0, -1.0, 0.5])
    z, reliability = normalize(x, 1.0, x.copy(), x**2, prior_weight=3.0)
    # mean x/4, variance (x^2 + 3)/4 - (x/4)^2: the utterance counts once next to 3 population ones
    mean, var = x / 4, (x**2 + 3) / 4 - (x / 4) ** 2
    assert z == pytest.approx((x - mean) / np.sqrt(var))
    assert reliability == pytest.approx(0.25)


def test_many_utterances_converge_to_the_speakers_own_z_score():
    rng = np.random.default_rng(1)
    speaker = rng.normal(5.0, 2.0, size=(5000, 3))  # far from the population's 0 and 1
    stats = SpeakerStats()
    for x in speaker:
        stats.add(x, horizon=1e9)
    z, reliability = normalize(speaker[0], stats.count, stats.total, stats.total_sq, 3.0)
    own = (speaker[0] - speaker.mean(0)) / speaker.std(0)
    assert z == pytest.approx(own, abs=0.01)
    assert reliability > 0.999


def test_the_horizon_caps_the_weight_and_forgets_old_utterances():
    stats = SpeakerStats()
    for _ in range(100):
        stats.add(np.array([10.0]), horizon=20)
    for _ in range(100):
        stats.add(np.array([-10.0]), horizon=20)
    assert stats.count == pytest.approx(20.0)
    assert stats.heard == 200
    assert stats.total[0] / stats.count < -9.8  # the first hundred weigh 0.95^100 of what they did


def test_stats_round_trip_through_json_and_refuse_another_dimension():
    stats = SpeakerStats()
    stats.add(np.arange(4.0), horizon=10)
    back = SpeakerStats.from_json(json.loads(json.dumps(stats.to_json())), 4, "state")
    assert back.count == stats.count and np.array_equal(back.total_sq, stats.total_sq)
    with pytest.raises(ValueError, match="statistics of 4 features, the head reads 5"):
        SpeakerStats.from_json(stats.to_json(), 5, "state")


def test_head_file_round_trip_gives_the_same_scores(tmp_path):
    head = make_head()
    loaded = AdapterHead.load(head.save(tmp_path / "h.json"))
    z = np.random.default_rng(2).normal(size=DIM)
    assert loaded.scores(z, 0.5) == pytest.approx(head.scores(z, 0.5))
    assert loaded.feature_names[-1] == "logit_angry" and len(loaded.feature_names) == DIM


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other/1"}, "format must be"),
        ({"prosody_version": 99}, "prosody features version 99"),
        ({"weights": [[0.0] * 3] * 4}, "weights has shape"),
        ({"bias": [0.0]}, "bias has shape"),
        ({"prior_weight": 0}, "must be positive"),
        ({"labels": None}, "TypeError"),
    ],
)
def test_a_bad_head_file_is_refused_with_the_field(change, message):
    data = {**make_head().to_json(), **change}
    with pytest.raises(ValueError, match=message):
        AdapterHead.from_json(data, "ser/speaker_adapter.json")


def test_unreadable_head_file_names_the_path(tmp_path):
    path = tmp_path / "h.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="h.json: cannot read"):
        AdapterHead.load(path)
    assert FORMAT in json.dumps(make_head().to_json())


def test_features_scale_prosody_and_logits():
    head = make_head()
    t = np.arange(8000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    logits = np.array([1.0, 2.0, 3.0, 4.0])
    x = head.features(audio, logits, 16000)
    raw = np.concatenate([prosody.prosody_features(audio), logits])
    assert x == pytest.approx((raw - head.scale_mean) / head.scale_std)


def test_simulated_rows_cover_every_utterance_with_its_reliability():
    rng = np.random.default_rng(3)
    scaled = rng.normal(size=(40, 5))
    speakers = np.repeat(["a", "b", "c", "d"], 10)
    rows, index = simulate_heard(scaled, speakers, 3.0, rng, draws=4, counts=(0, 5))
    assert rows.shape[1] == 6 and len(rows) == len(index)
    assert set(np.round(rows[:, -1], 4)) <= {round(1 / 4, 4), round(6 / 9, 4)}  # n + 1 counted, n in {0, 5}
    assert set(index) <= set(range(40))
