"""RQ-Kmeans semantic IDs (edgewise.cloud.rec.tokenizer) on data whose answer is known."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from edgewise.cloud.rec.tokenizer import (
    TokenizerConfig,
    add_collision_digit,
    build_semantic_ids,
    collision_digits,
    rq_kmeans,
)
from edgewise.config import load_config
from edgewise.errors import ConfigError, DataError
from edgewise.rec_ids import PrefixTrie


def blobs(n_blobs: int = 8, per_blob: int = 100, dim: int = 16, seed: int = 0):
    """Well-separated Gaussian blobs: centres ~ N(0, 25 I), points ~ centre + N(0, I)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=5.0, size=(n_blobs, dim))
    labels = np.repeat(np.arange(n_blobs), per_blob)
    points = centers[labels] + rng.normal(size=(labels.size, dim))
    order = rng.permutation(labels.size)
    return points[order].astype(np.float32), labels[order]


def purity(found: np.ndarray, truth: np.ndarray) -> float:
    """The smaller of the two purities: how much of each found cluster is one true group, and
    how much of each true group is one found cluster (1.0 only for the same partition)."""
    table = np.zeros((found.max() + 1, truth.max() + 1), dtype=np.int64)
    np.add.at(table, (found, truth), 1)
    return min(table.max(axis=1).sum(), table.max(axis=0).sum()) / found.size


def test_purity_helper():
    assert purity(np.array([1, 1, 0, 0]), np.array([0, 0, 1, 1])) == 1.0
    assert purity(np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1])) == 0.5
    assert purity(np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1])) == 0.5


def test_level_one_recovers_the_blobs():
    x, labels = blobs()
    ids, report = build_semantic_ids(x, TokenizerConfig(levels=2, codebook_size=8, seed=1))
    assert purity(ids.codes[:, 0], labels) > 0.95
    assert report["per_level"][0]["codebook_use"] == 1.0
    # level 1 takes away the blob centres: most of the energy
    assert report["per_level"][0]["recon_rel"] < 0.1


def test_every_item_gets_a_unique_id_the_trie_finds():
    x, _ = blobs(per_blob=60)
    ids, report = build_semantic_ids(x, TokenizerConfig(levels=2, codebook_size=4))
    assert ids.n_items == x.shape[0] and ids.n_levels == 3
    assert np.unique(ids.codes, axis=0).shape[0] == ids.n_items
    assert ids.level_sizes == (4, 4, report["largest_group"])
    trie = PrefixTrie.build(ids)
    assert np.array_equal(trie.item_of(ids.codes), np.arange(ids.n_items))


def test_collision_digits_rank_items_in_index_order():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 0], [3, 1]])
    assert collision_digits(codes).tolist() == [0, 0, 1, 2, 1, 0]
    ids = add_collision_digit(codes, (4, 3))
    assert ids.level_sizes == (4, 3, 3)
    assert ids.codes[:, 2].tolist() == [0, 0, 1, 2, 1, 0]


def test_collision_digits_rank_by_popularity_when_given():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 0], [3, 1]])
    popularity = np.array([5, 1, 9, 5, 7, 0])  # item 2 leads its group; items 0 and 3 tie: index order
    assert collision_digits(codes, popularity).tolist() == [1, 1, 0, 2, 0, 0]
    ids = add_collision_digit(codes, (4, 3), popularity)
    assert ids.codes[:, 2].tolist() == [1, 1, 0, 2, 0, 0]
    with pytest.raises(ValueError, match=r"popularity has shape \(5,\), expected \(6,\)"):
        collision_digits(codes, popularity[:5])


def test_duplicate_embeddings_get_collision_digits_and_an_exact_report():
    a, b, c = np.eye(3, dtype=np.float32) * 10
    x = np.stack([a, b, a, c, a, b])  # groups: a {0, 2, 4}, b {1, 5}, c {3}
    ids, report = build_semantic_ids(x, TokenizerConfig(levels=1, codebook_size=4))
    # only three distinct points: the codebook shrinks to 3, with a note and no warning
    assert report["notes"] == ["level 0: codebook shrunk from 4 to 3 (3 distinct residuals)"]
    first = ids.codes[:, 0]
    assert first[0] == first[2] == first[4] and first[1] == first[5]
    assert len({first[0], first[1], first[3]}) == 3
    assert ids.codes[:, 1].tolist() == [0, 0, 1, 0, 2, 1]
    assert ids.level_sizes == (3, 3)
    assert report["collision_rate"] == pytest.approx(5 / 6)  # all but item 3 share their code
    assert report["largest_group"] == 3 and report["distinct_prefixes"] == 3
    level = report["per_level"][0]
    assert level["codebook_size"] == 3 and level["codes_used"] == 3 and level["codebook_use"] == 1.0
    p = np.array([3, 2, 1]) / 6
    assert level["perplexity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert level["recon_mse"] == pytest.approx(0.0, abs=1e-6) and report["base_mse"] == pytest.approx(100.0)


def test_report_matches_a_hand_count_on_random_codes():
    x, _ = blobs(n_blobs=4, per_blob=30, dim=8, seed=5)
    ids, report = build_semantic_ids(x, TokenizerConfig(levels=2, codebook_size=3))
    rows = [tuple(r) for r in ids.codes[:, :2].tolist()]
    sizes = {r: rows.count(r) for r in set(rows)}
    assert report["collision_rate"] == pytest.approx(sum(sizes[r] > 1 for r in rows) / len(rows))
    assert report["largest_group"] == max(sizes.values()) == ids.level_sizes[-1]
    assert report["distinct_prefixes"] == len(sizes) == report["per_level"][1]["prefixes"]
    assert report["per_level"][0]["prefixes"] == len({r[0] for r in rows})


def test_n_smaller_than_k_shrinks_the_codebook_quietly():
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids, report = build_semantic_ids(x, TokenizerConfig(levels=2, codebook_size=32))
    assert "level 0: codebook shrunk from 32 to 5 (5 items)" in report["notes"]
    assert ids.level_sizes[0] == 5 and ids.n_items == 5


def test_reconstruction_error_is_what_the_codebooks_leave():
    x, _ = blobs(n_blobs=6, per_blob=50, dim=8, seed=2)
    rq = rq_kmeans(x, TokenizerConfig(levels=3, codebook_size=[6, 4, 4]))
    assert rq.codebook_sizes == (6, 4, 4)
    assert rq.recon_mse[0] > rq.recon_mse[1] > rq.recon_mse[2]
    left = ((x - rq.reconstruct()) ** 2).sum(axis=1).mean()
    assert rq.recon_mse[-1] == pytest.approx(left, rel=1e-4)
    assert np.array_equal(rq.encode(x), rq.codes)  # encoding the training items gives their codes


def test_deterministic_for_a_seed():
    x = np.random.default_rng(1).normal(size=(400, 8)).astype(np.float32)
    config = TokenizerConfig(levels=2, codebook_size=8, seed=3)
    first, report = build_semantic_ids(x, config)
    again, _ = build_semantic_ids(x, config)
    assert first == again
    other, _ = build_semantic_ids(x, config.model_copy(update={"seed": 4}))
    assert other != first


def test_fitting_on_a_sample_still_codes_every_item():
    x, labels = blobs(n_blobs=5, per_blob=200, dim=8, seed=4)
    rq = rq_kmeans(x, TokenizerConfig(levels=1, codebook_size=5, max_fit_items=100))
    assert rq.codes.shape == (1000, 1)
    assert purity(rq.codes[:, 0], labels) > 0.95


def test_balanced_assignment_uses_every_code_equally():
    x = np.random.default_rng(2).normal(size=(400, 6)).astype(np.float32)
    x[:300] += 4  # three quarters of the items in one place
    rq = rq_kmeans(x, TokenizerConfig(levels=2, codebook_size=8, balanced=True, iterations=10))
    for level in range(2):
        assert np.bincount(rq.codes[:, level], minlength=8).tolist() == [50] * 8


def test_config_names_the_wrong_field():
    with pytest.raises(ConfigError, match="field 'codebook_size': value error, lists 2 sizes for 3 levels"):
        load_config(TokenizerConfig, {"codebook_size": [8, 8]})
    with pytest.raises(
        ConfigError, match="field 'codebook_size': value error, every codebook needs at least 2"
    ):
        load_config(TokenizerConfig, {"levels": 2, "codebook_size": [8, 1]})
    with pytest.raises(ConfigError, match="unknown field 'levles'"):
        load_config(TokenizerConfig, {"levles": 2})
    assert load_config(TokenizerConfig, {"levels": 2, "codebook_size": 16}).codebook_sizes() == (16, 16)


def test_bad_embeddings_are_a_data_error():
    with pytest.raises(DataError, match="expected a non-empty"):
        rq_kmeans(np.zeros((0, 4)))
    x = np.ones((3, 2))
    x[1, 0] = np.nan
    with pytest.raises(DataError, match="1 items have NaN"):
        rq_kmeans(x)
