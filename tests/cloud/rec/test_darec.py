"""DaRec alignment: two views of the same items get shared parts that find each other, specific parts
decorrelated from them; wired in as the tokenizer's ``darec`` source."""

from __future__ import annotations

import numpy as np

from edgewise.cloud.rec.darec import DaRecConfig, darec_align


def _views(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    common = rng.standard_normal((n, 8))
    collab = np.concatenate([common @ rng.standard_normal((8, 24)), rng.standard_normal((n, 8))], 1)
    text = np.concatenate([common @ rng.standard_normal((8, 40)), rng.standard_normal((n, 8))], 1)
    return collab.astype(np.float32), text.astype(np.float32)


def test_aligned_shared_parts_retrieve_their_own_item_and_losses_fall():
    collab, text = _views()
    cfg = DaRecConfig(steps=100, batch_size=128, clusters=8, recluster_every=25)
    vectors, report = darec_align(collab, text, cfg)
    assert vectors.shape == (200, cfg.shared_dim + 2 * cfg.specific_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert report["shared_retrieval_at_1"] > 20 * report["chance_retrieval_at_1"]
    first, last = report["losses_first_step"], report["losses_last_step"]
    assert last["global"] < first["global"] and last["orthogonal"] < first["orthogonal"]
