"""How hard is a corpus? eGeMAPS functionals (openSMILE) + logistic regression, the classic SER baseline.

openSMILE's licence bars commercial use, so this lives in the separate ``baseline`` extra and is
used to grade corpora and in the benchmark report, never in a shipped model.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

from edgewise.audio import load_audio
from edgewise.cloud.train.metrics import classification_report
from edgewise.errors import MissingDependencyError
from edgewise.parallel import process_pool

log = logging.getLogger(__name__)

_SMILES: dict[str, object] = {}  # one openSMILE extractor per feature set, per process


def _functionals(path: str, feature_set: str = "eGeMAPSv02") -> np.ndarray:
    if feature_set not in _SMILES:
        import opensmile

        _SMILES[feature_set] = opensmile.Smile(
            feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel.Functionals
        )
    audio = load_audio(path, 16000)
    return _SMILES[feature_set].process_signal(audio, 16000).to_numpy(dtype=np.float64)[0]


def opensmile_functionals(
    paths: list[Path], feature_set: str = "eGeMAPSv02", workers: int | None = None
) -> np.ndarray:
    """openSMILE functionals per file, shape (n, dims): ``eGeMAPSv02`` (88) or ``ComParE_2016`` (6373)."""
    try:
        import opensmile  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "the baseline needs openSMILE: pip install 'edgewise[baseline]'"
        ) from None
    workers = workers or os.cpu_count() or 1
    job = functools.partial(_functionals, feature_set=feature_set)
    with process_pool(workers) as pool:
        return np.stack(list(pool.map(job, [str(p) for p in paths], chunksize=16)))


def egemaps_features(paths: list[Path], workers: int | None = None) -> np.ndarray:
    """88 eGeMAPS v02 functionals per file, shape (n, 88)."""
    return opensmile_functionals(paths, "eGeMAPSv02", workers)


def normalize_per_speaker(features: np.ndarray, speakers: list[str]) -> np.ndarray:
    """Z-score every column within each speaker's rows; a column constant for a speaker becomes 0."""
    out = np.zeros_like(features, dtype=np.float64)
    speakers_arr = np.asarray(speakers)
    for speaker in np.unique(speakers_arr):
        rows = speakers_arr == speaker
        block = features[rows]
        std = block.std(axis=0)
        out[rows] = np.divide(block - block.mean(axis=0), std, out=np.zeros_like(block), where=std > 0)
    return out


def fit_logistic(data: dict[str, tuple[np.ndarray, np.ndarray]], labels, *, seed: int = 0) -> dict:
    """Standardize + logistic regression on ``data["train"]``, ``C`` chosen on ``data["val"]``;
    test-split metrics in the same format as ``eval ser``, plus ``C`` and ``val_ua``."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise MissingDependencyError(
            "the baseline needs scikit-learn: pip install 'edgewise[baseline]'"
        ) from None
    best = None
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))
        clf.fit(*data["train"])
        val = classification_report(data["val"][1], clf.predict(data["val"][0]), labels)
        if best is None or val["ua"] > best[0]:
            best = (val["ua"], c, clf)
    val_ua, c, clf = best
    report = classification_report(data["test"][1], clf.predict(data["test"][0]), labels)
    return {**report, "split": "test", "C": c, "val_ua": val_ua}


def egemaps_baseline(
    corpus, *, seed: int = 0, workers: int | None = None, speaker_norm: bool = False
) -> dict:
    """Fit on train (C chosen on val), report test metrics in the same format as the neural models.

    ``speaker_norm`` z-scores the functionals within each speaker of each split, test speakers with
    their own utterances. That needs several utterances of a speaker known in advance, so it is a
    reference for how much of a corpus's difficulty is speaker variation (pitch, level and rate
    baselines), not a model a device could run on one utterance of a new speaker.
    """
    return egemaps_baselines(corpus, seed=seed, workers=workers, speaker_norm=(speaker_norm,))[0]


def egemaps_baselines(
    corpus, *, seed: int = 0, workers: int | None = None, speaker_norm: tuple[bool, ...] = (False, True)
) -> list[dict]:
    """:func:`egemaps_baseline` for each ``speaker_norm`` setting, extracting the features once."""
    try:
        import opensmile  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "the baseline needs openSMILE and scikit-learn: pip install 'edgewise[baseline]'"
        ) from None

    index = {lab: i for i, lab in enumerate(corpus.labels)}
    splits = {split: corpus.split(split) for split in ("train", "val", "test")}
    raw = {split: egemaps_features([u.path for u in utts], workers) for split, utts in splits.items()}
    model = "eGeMAPSv02 functionals + logistic regression"
    reports = []
    for norm in speaker_norm:
        data = {
            split: (
                normalize_per_speaker(raw[split], [u.speaker for u in utts]) if norm else raw[split],
                np.array([index[u.label] for u in utts]),
            )
            for split, utts in splits.items()
        }
        reports.append(
            {
                **fit_logistic(data, corpus.labels, seed=seed),
                "model": model + (", z-scored per speaker" if norm else ""),
                "speaker_normalized": norm,
            }
        )
    return reports
