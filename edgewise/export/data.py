"""The data export needs: validation utterances for the parity gate, training features to calibrate.

Both come from the run's corpus (``model.json`` provenance) or the one given with ``--data``, go
through the feature cache the trainer filled, and are normalized with the run's own statistics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgewise.cloud.data.corpus import Corpus, load_corpus
from edgewise.cloud.train.featcache import FeatureSet, compute_features, default_cache_dir
from edgewise.cloud.train.run import RunInfo
from edgewise.export.errors import ExportError
from edgewise.features import normalize_features

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_UTTERANCES = 300


def export_corpus(info: RunInfo, data: str | Path | None) -> Corpus:
    """``data`` if given, else the corpus the run was trained on; its labels must be the run's."""
    if data is None:
        recorded = (info.meta.get("provenance") or {}).get("corpus")
        if not recorded:
            raise ExportError(f"{info.root}: model.json names no training corpus; pass --data CORPUS")
        if not Path(recorded).is_dir():
            raise ExportError(
                f"the run's corpus {recorded} (from {info.root / 'model.json'}) is not available here; "
                "pass --data CORPUS"
            )
        data = recorded
    corpus = load_corpus(data)
    if tuple(corpus.labels) != info.labels:
        raise ExportError(
            f"{corpus.root}: corpus labels {list(corpus.labels)} differ from the run's {list(info.labels)}"
        )
    return corpus


def _features(
    corpus: Corpus, utterances: list, info: RunInfo, cache_dir: Path | None, workers: int, progress: bool
) -> FeatureSet:
    return compute_features(
        utterances,
        info.labels,
        info.features.without_stats(),
        cache_dir or default_cache_dir(corpus.root),
        workers=workers,
        progress=progress,
    )


def validation_set(
    corpus: Corpus,
    info: RunInfo,
    *,
    split: str = "val",
    cache_dir: Path | None = None,
    workers: int = 1,
    progress: bool = False,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Whole utterances of a split as (1, time, n_mels) normalized float32 arrays, and their labels."""
    fs = _features(corpus, corpus.split(split), info, cache_dir, workers, progress)
    inputs = [normalize_features(fs.item(i), info.features)[None].astype(np.float32) for i in range(len(fs))]
    return inputs, fs.labels


def calibration_set(
    corpus: Corpus,
    info: RunInfo,
    size: int = DEFAULT_CALIBRATION_UTTERANCES,
    *,
    seed: int = 0,
    cache_dir: Path | None = None,
    workers: int = 1,
    progress: bool = False,
) -> list[np.ndarray]:
    """Up to ``size`` training utterances (a fixed random sample), normalized, whole length."""
    if size < 1:
        raise ExportError(f"calibration size must be at least 1, got {size}")
    utterances = corpus.split("train")
    if size < len(utterances):
        chosen = np.sort(np.random.default_rng(seed).choice(len(utterances), size, replace=False))
        utterances = [utterances[i] for i in chosen]
    fs = _features(corpus, utterances, info, cache_dir, workers, progress)
    log.info("calibration: %d training utterances, %d frames", len(fs), int(fs.lengths().sum()))
    return [normalize_features(fs.item(i), info.features).astype(np.float32) for i in range(len(fs))]
