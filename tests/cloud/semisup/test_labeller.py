"""The acoustic views (Frechet distance, speaker normalization) and the pseudo-labelling rounds, on
data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.cloud.semisup.acoustic import FadView, fit_gaussian, frechet_distance
from edgewise.cloud.semisup.labeller import (
    LabellerConfig,
    Problem,
    ViewVotes,
    run_method,
    stratified_fraction,
    text_votes,
    view_weights,
)
from edgewise.cloud.semisup.text_view import build_text_classifier

CLASSES = ("neutral", "happy", "sad", "angry")


def test_frechet_distance_is_the_closed_form_and_batches():
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2
    fd = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert fd == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3))
    mu, cov = fit_gaussian(a, shrink=0.0)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
    mu2, cov2 = fit_gaussian(rng.normal(2.0, 1.5, size=(50, 3)), shrink=0.0)
    assert frechet_distance(mu, cov, mu2, cov2) == pytest.approx(frechet_distance(mu2, cov2, mu, cov))
    batch = frechet_distance(np.stack([mu, mu2]), np.stack([cov, cov2]), mu2, cov2)
    assert batch.shape == (2,) and batch[1] == pytest.approx(0.0, abs=1e-9) and batch[0] > 1.0


def _speaker_blobs(rng, speakers=12, per=24, dims=6, shift=1.5, offset=6.0):
    """Four classes apart by ``shift`` along their own axis, each speaker moved by a random
    ``offset``-sized baseline (the structure of the synthesized corpus, exaggerated)."""
    x, y, who = [], [], []
    for s in range(speakers):
        base = rng.normal(0, offset, dims)
        for i in range(per):
            c = i % 4
            point = base + rng.normal(0, 1, dims)
            point[c] += shift * 2
            x.append(point)
            y.append(c)
            who.append(f"s{s}")
    return np.array(x), np.array(y), np.array(who)


def test_a_view_votes_the_nearest_class_and_speaker_normalization_removes_the_baselines():
    rng = np.random.default_rng(1)
    x, y, who = _speaker_blobs(rng)
    labelled = stratified_fraction(y, 0.3, rng)
    scores = {}
    for name, speakers in (("raw", None), ("per speaker", who)):
        view = FadView.build(name, x, dims=6, k=8, shrink=0.2, speakers=speakers)
        cv = view.cross_validated_votes(labelled, y[labelled], 4, folds=5, seed=0)
        scores[name] = (cv == y[labelled]).mean()
        votes = view.votes(labelled, y[labelled], 4)
        assert votes.shape == (len(x),) and set(votes) <= {0, 1, 2, 3}
    assert scores["per speaker"] > 0.8
    assert scores["per speaker"] > scores["raw"] + 0.2  # the baselines swamp the classes without it


def test_stratified_fraction_takes_each_class_share_and_at_least_two():
    y = np.repeat(np.arange(4), [40, 20, 10, 3])
    rows = stratified_fraction(y, 0.25, np.random.default_rng(0))
    assert np.bincount(y[rows]).tolist() == [10, 5, 2, 2]  # round(0.75) = 1 -> 2
    assert stratified_fraction(y, 1.0, np.random.default_rng(0)).tolist() == list(range(len(y)))


def _problem(rng, fraction=0.2, n=400, dims=8, separation=1.2):
    """Four classes; the classifier's features are noisy enough that it is unsure of many rows."""
    y = rng.integers(0, 4, n)
    centres = rng.normal(0, separation, (4, dims))

    def draw(labels):
        return (centres[labels] + rng.normal(0, 1, (len(labels), dims))).astype(np.float32)[:, None, :]

    y_val, y_test = rng.integers(0, 4, 120), rng.integers(0, 4, 400)
    return Problem(
        classes=CLASSES,
        x_pool=draw(y),
        y_pool=y,
        x_val=draw(y_val),
        y_val=y_val,
        x_test=draw(y_test),
        y_test=y_test,
        labelled=stratified_fraction(y, fraction, rng),
        val_rows=np.arange(120),
    )


CFG = LabellerConfig(rounds=3)


def test_supervised_is_round_zero_and_an_unknown_method_is_refused():
    problem = _problem(np.random.default_rng(2))
    result = run_method("supervised", problem, 0, CFG)
    assert result.kept_round == 0 and len(result.rounds) == 1 and 0.25 < result.test_ua <= 1.0
    with pytest.raises(ValueError, match="unknown method"):
        run_method("co-training", problem, 0, CFG)


def test_views_that_know_the_answer_give_correct_pseudo_labels_and_chance_views_give_none():
    rng = np.random.default_rng(3)
    problem = _problem(rng)
    truth = problem.y_pool
    oracle = [ViewVotes(f"oracle{i}", truth.copy(), 0.95) for i in range(2)]
    result = run_method("multi-view", problem, 0, CFG, oracle)
    added = [r for r in result.rounds if r["round"] > 0]
    assert added and added[0]["pseudo"] > 0 and added[0]["pseudo_accuracy"] == 1.0
    # views no better than chance get no weight: nothing can be confirmed, the labelled rows stay alone
    noise = [ViewVotes("noise", rng.integers(0, 4, len(truth)), 0.27)]
    assert view_weights(noise, 4, CFG.chance_margin).tolist() == [0.0]
    alone = run_method("multi-view", problem, 0, CFG, noise)
    assert [r["round"] for r in alone.rounds] == [0]
    assert alone.test_ua == run_method("supervised", problem, 0, CFG).test_ua


def test_self_training_adds_only_what_the_classifier_is_sure_of():
    problem = _problem(np.random.default_rng(4), separation=3.0)
    sure = run_method("self-training", problem, 0, LabellerConfig(rounds=2, self_threshold=0.9))
    assert sure.rounds[1]["pseudo"] > 0 and sure.rounds[1]["pseudo_accuracy"] > 0.9
    # classes that overlap: the classifier is never 99% sure, so nothing is added
    unsure = _problem(np.random.default_rng(4), separation=0.2)
    never = run_method("self-training", unsure, 0, LabellerConfig(rounds=2, self_threshold=0.99))
    assert [r["round"] for r in never.rounds] == [0]


def test_the_transcript_classifier_is_a_view_scored_by_cross_validation():
    rng = np.random.default_rng(5)
    problem = _problem(rng)
    words = {0: "fine okay", 1: "great wonderful", 2: "sorry lost", 3: "furious hate"}
    lexical = [f"i feel {words[c]} today" for c in problem.y_pool]
    view = text_votes(problem, lexical, build_text_classifier("tfidf"), CFG, seed=0)
    assert view.ua > 0.95 and (view.votes == problem.y_pool).mean() > 0.95
    neutral = ["the train left on time"] * len(problem.y_pool)  # the synthesized corpus's case
    flat = text_votes(problem, neutral, build_text_classifier("tfidf"), CFG, seed=0)
    assert view_weights([flat], 4, CFG.chance_margin).tolist() == [0.0]
