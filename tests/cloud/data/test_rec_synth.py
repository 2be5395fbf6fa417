"""The synthetic world and its user simulator: responses with the properties the RL and reward
shaping code relies on (checked statistically, so a broken simulator fails), learnable sequences,
reproducibility, chunking, saving beside the dataset, and ``edgewise data rec synthetic``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgewise.cli import main
from edgewise.cloud.data.rec_data import RecDataset, leave_last_out, load_rec_dataset, save_rec_dataset
from edgewise.cloud.data.rec_synth import SimulatorConfig, UserSimulator, generate_synthetic, make_config
from edgewise.errors import ConfigError, DataError

SMALL = dict(n_users=600, n_items=300, n_topics=12, seed=3)


@pytest.fixture(scope="module")
def world() -> tuple[RecDataset, UserSimulator]:
    return generate_synthetic(SimulatorConfig(**SMALL))


@pytest.fixture(scope="module")
def responses(world):
    """One response per (user, item) over 300 users x 100 random items."""
    _, sim = world
    rng = np.random.default_rng(0)
    users = rng.integers(0, sim.n_users, 300)
    items = rng.integers(0, sim.n_items, (300, 100))
    return items, sim.respond(users, items, rng)


def test_dataset_has_the_contract_fields(world):
    ds, sim = world
    assert (ds.n_users, ds.n_items) == (600, 300)
    lengths = np.array([len(s) for s in ds.sequences()])
    assert lengths.min() >= 5 and lengths.max() <= 35 and ds.n_interactions == lengths.sum()
    assert ds.watch_time.dtype == np.float32 and ds.disliked.dtype == np.bool_
    assert np.all(ds.watch_time >= 0) and np.all(ds.watch_time <= ds.item_duration[ds.item] + 1e-4)
    assert ds.item_duration.min() >= 5 and ds.item_duration.max() <= 1200
    assert 30 < np.median(ds.item_duration) < 120  # log-normal around the 60 s median
    assert all(np.all(np.diff(t) > 0) for t in ds.user_slices("timestamp"))
    texts = ds.item_texts()
    topic = sim.item_topic[0]
    assert texts[0].startswith(f"topic-{topic} clip 0. ") and "seconds" in texts[0]
    assert 0.03 < ds.disliked.mean() < 0.5


def test_responses_are_bounded_by_duration(world, responses):
    _, sim = world
    items, out = responses
    assert set(out) == {"watch_time", "watch_fraction", "disliked", "affinity"}
    assert all(v.shape == items.shape for v in out.values())
    duration = sim.item_duration[items]
    assert np.all(out["watch_time"] >= 0) and np.all(out["watch_time"] <= duration * (1 + 1e-6))
    np.testing.assert_allclose(out["watch_time"], out["watch_fraction"] * duration, rtol=1e-5)
    assert np.all((out["affinity"] > 0) & (out["affinity"] < 1))


def test_longer_items_are_watched_longer_but_for_a_smaller_fraction(world, responses):
    _, sim = world
    items, out = responses
    duration = sim.item_duration[items]
    short, long = duration < np.quantile(duration, 0.25), duration > np.quantile(duration, 0.75)
    assert out["watch_fraction"][short].mean() > out["watch_fraction"][long].mean() + 0.1
    assert out["watch_time"][long].mean() > 2 * out["watch_time"][short].mean()
    # the bias reward shaping has to correct: the most-watched responses are mostly long items,
    # far more than among the responses the users truly like most
    most_watched = out["watch_time"] > np.quantile(out["watch_time"], 0.9)
    most_liked = out["affinity"] > np.quantile(out["affinity"], 0.9)
    assert long[most_watched].mean() > 2 * long[most_liked].mean()


def test_dislikes_are_likelier_at_low_affinity(responses):
    _, out = responses
    a, disliked = out["affinity"].ravel(), out["disliked"].ravel()
    low, high = a < np.quantile(a, 0.25), a > np.quantile(a, 0.75)
    assert disliked[low].mean() > 0.2
    assert disliked[low].mean() > 5 * disliked[high].mean()
    # and the fraction watched follows affinity
    fraction = out["watch_fraction"].ravel()
    assert fraction[high].mean() > fraction[low].mean() + 0.15


def test_sequences_have_structure_a_simple_model_learns(world):
    """Predicting the validation item from the last training item (item-to-item counts) beats
    recommending the most popular items by a wide margin."""
    ds, _ = world
    split = leave_last_out(ds)
    n = ds.n_items
    popularity = np.bincount(np.concatenate(split.train), minlength=n).astype(float)
    follows = np.zeros((n, n))
    for seq in split.train:
        np.add.at(follows, (seq[:-1], seq[1:]), 1.0)

    def hit_rate(score) -> float:
        hits = [y in np.argsort(-score(h))[:10] for h, y in zip(split.valid_history, split.valid_target)]
        return float(np.mean(hits))

    pop_hr = hit_rate(lambda h: popularity)
    markov_hr = hit_rate(lambda h: follows[h[-1]] + 1e-3 * popularity)
    assert markov_hr > pop_hr + 0.08, (markov_hr, pop_hr)


def test_generation_is_reproducible_and_seeded():
    cfg = SimulatorConfig(n_users=80, n_items=60, seed=11)
    a, sim_a = generate_synthetic(cfg)
    b, sim_b = generate_synthetic(cfg)
    for name in ("user", "item", "timestamp", "watch_time", "disliked", "item_duration"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(sim_a.user_interest, sim_b.user_interest)
    assert a.item_fields == b.item_fields
    c, _ = generate_synthetic(cfg.model_copy(update={"seed": 12}))
    assert not np.array_equal(c.item[: a.n_interactions], a.item[: c.n_interactions])


def test_chunked_generation_gives_a_valid_dataset():
    ds, sim = generate_synthetic(SimulatorConfig(n_users=50, n_items=40, n_topics=5, chunk_users=7, seed=2))
    assert ds.n_users == 50 and np.unique(ds.user).size == 50
    ds.validate()  # sorted by (user, time), indices in range
    assert np.all(np.isfinite(sim.user_interest)) and np.allclose(sim.user_interest.sum(1), 1, atol=1e-4)


def test_simulator_is_saved_beside_the_dataset_and_loads_back(tmp_path, world):
    ds, sim = world
    out = save_rec_dataset(ds, tmp_path / "DATA", simulator=sim)
    back = UserSimulator.load(out)
    assert back.config == sim.config
    for name, value in sim.state_arrays().items():
        np.testing.assert_array_equal(getattr(back, name), value)
    users, items = np.array([0, 5]), np.array([[1, 2, 3], [4, 5, 6]])
    r1 = sim.respond(users, items, np.random.default_rng(9))
    r2 = back.respond(users, items, np.random.default_rng(9))
    for key in r1:
        np.testing.assert_array_equal(r1[key], r2[key])
    assert load_rec_dataset(out).meta["source"] == "synthetic"

    plain = save_rec_dataset(ds, tmp_path / "PLAIN")
    with pytest.raises(DataError, match="has no user simulator"):
        UserSimulator.load(plain)
    (out / "simulator.npz").unlink()
    with pytest.raises(DataError, match="simulator.npz"):
        UserSimulator.load(out)


def test_respond_checks_shapes_and_ranges(world):
    _, sim = world
    with pytest.raises(ValueError, match=r"users \(B,\) and items \(B, K\)"):
        sim.respond(np.array([0, 1]), np.array([1, 2]))
    with pytest.raises(ValueError, match="item index out of range"):
        sim.respond(np.array([0]), np.array([[sim.n_items]]))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="min_history"):
        make_config(min_history=10, max_history=5)
    with pytest.raises(ConfigError, match="field 'n_items'"):
        make_config(n_items=1)
    with pytest.raises(ConfigError, match="unknown field 'colour'"):
        make_config(colour="red")


def test_cli_synthetic_end_to_end(tmp_path, capsys):
    out = tmp_path / "DATA"
    cmd = ["-q", "data", "rec", "synthetic", "--users", "40", "--items", "30", "--seed", "4"]
    assert main([*cmd, "--set", "duration_median_s=90", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["users"] == 40 and summary["items"] == 30 and summary["simulator"]["seed"] == 4
    ds = load_rec_dataset(out)
    assert ds.n_interactions == summary["interactions"] and ds.watch_time is not None
    assert UserSimulator.load(out).config.duration_median_s == 90
    assert main([*cmd, "--out", str(out)]) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert main([*cmd, "--set", "topic_follow=2", "--out", str(tmp_path / "D2")]) == 2
    assert "field 'topic_follow'" in capsys.readouterr().err
    assert not (tmp_path / "D2").exists()
