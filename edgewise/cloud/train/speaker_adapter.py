"""``edgewise train ser-adapter RUN --data CORPUS``: fit the device's speaker-adaptive head.

Reads a finished SER run and the corpus it was trained on, computes for every training utterance
the prosodic functionals and the merged model's logits, scales them, simulates every number of
utterances a device may have heard of each training speaker (:func:`edgewise.speaker_adapt.
simulate_heard`), and fits a multinomial logistic regression on the result. Writes
``RUN/speaker_adapter.json``, which ``edgewise export`` packs into the bundle. The validation
speakers, which neither the model nor the head saw, measure it: UA with 0 and with 10 utterances
heard, in ``fitted``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.errors import EdgewiseError
from edgewise.speaker_adapt import AdapterHead, normalize, simulate_heard

log = logging.getLogger(__name__)
FILE = "speaker_adapter.json"


def split_inputs(run: Path, corpus_dir: Path, split: str, *, skip_bad: bool = False) -> dict[str, Any]:
    """Raw features (prosody + the merged model's logits), labels and speakers of one split."""
    import torch

    from edgewise import prosody
    from edgewise.audio import load_audio
    from edgewise.cloud.data.corpus import load_corpus
    from edgewise.cloud.train.featcache import compute_features, default_cache_dir
    from edgewise.cloud.train.run import load_run_model
    from edgewise.cloud.train.trainer import predict_logits

    corpus = load_corpus(corpus_dir)
    model, info = load_run_model(run)
    items = corpus.split(split)
    if not items:
        raise EdgewiseError(f"{corpus_dir}: the {split} split is empty")
    fs = compute_features(items, info.labels, info.features, default_cache_dir(corpus.root), progress=False)
    with torch.no_grad():
        logits = predict_logits(model, fs, info.features)
    sr = info.features.sample_rate
    feats = np.stack([prosody.prosody_features(load_audio(str(u.path), sr), sr) for u in items])
    return {
        "raw": np.hstack([feats, logits.astype(np.float64)]),
        "labels": np.asarray(fs.labels),
        "speakers": np.asarray([u.speaker for u in items]),
        "label_names": list(info.labels),
    }


def heard_ua(
    head: AdapterHead,
    raw: np.ndarray,
    labels: np.ndarray,
    speakers: np.ndarray,
    heard: int,
    rounds: int,
    seed: int,
) -> float | None:
    """UA of ``head`` on speakers who have each been heard ``heard`` times before (random orders);
    None when no speaker has more than ``heard`` utterances."""
    from edgewise.cloud.train.metrics import classification_report

    rng = np.random.default_rng(seed)
    scaled = (raw - head.scale_mean) / head.scale_std
    truth, pred = [], []
    for _ in range(rounds):
        for speaker in np.unique(speakers):
            order = rng.permutation(np.flatnonzero(speakers == speaker))
            if len(order) <= heard:
                continue
            before = scaled[order[:heard]]
            total, total_sq = before.sum(0), (before**2).sum(0)
            for i in order[heard:]:
                z, r = normalize(
                    scaled[i], heard + 1.0, total + scaled[i], total_sq + scaled[i] ** 2, head.prior_weight
                )
                pred.append(int(np.argmax(head.scores(z, r))))
                truth.append(int(labels[i]))
    if not truth:
        return None
    return float(classification_report(np.asarray(truth), np.asarray(pred), head.labels)["ua"])


def fit_speaker_adapter(
    run: Path, corpus_dir: Path, *, prior_weight: float = 3.0, seed: int = 0, draws: int = 6, c: float = 0.1
) -> AdapterHead:
    """Fit the head on the training split; measure it on the validation split; return it."""
    from sklearn.linear_model import LogisticRegression

    if prior_weight <= 0:
        raise EdgewiseError(f"--prior-weight must be positive, got {prior_weight}")
    train = split_inputs(run, corpus_dir, "train")
    if len(np.unique(train["speakers"])) < 2:
        raise EdgewiseError(
            f"{corpus_dir}: the training split needs at least 2 speakers to fit speaker adaptation"
        )
    mean, std = train["raw"].mean(0), train["raw"].std(0)
    std = np.where(std > 1e-9, std, 1.0)
    rows, index = simulate_heard(
        (train["raw"] - mean) / std, train["speakers"], prior_weight, np.random.default_rng(seed), draws
    )
    log.info(
        "fitting the speaker adapter on %d simulated rows from %d training utterances",
        len(rows),
        len(np.unique(index)),
    )
    clf = LogisticRegression(C=c, max_iter=5000).fit(rows, train["labels"][index])
    names = train["label_names"]
    weights = np.zeros((len(names), rows.shape[1]))
    bias = np.zeros(len(names))
    weights[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    if len(clf.classes_) < len(names):  # a class the training split lacks never wins
        bias[np.setdiff1d(np.arange(len(names)), clf.classes_)] = -1e9
    head = AdapterHead(
        labels=names, scale_mean=mean, scale_std=std, weights=weights, bias=bias, prior_weight=prior_weight
    )
    fitted: dict[str, Any] = {
        "run": str(run),
        "data": str(corpus_dir),
        "train_utterances": len(train["labels"]),
        "train_speakers": int(len(np.unique(train["speakers"]))),
        "seed": seed,
        "draws": draws,
        "C": c,
    }
    try:
        val = split_inputs(run, corpus_dir, "val")
    except EdgewiseError as exc:
        log.warning("no validation measurement: %s", exc)
    else:
        fitted["val"] = {
            f"ua_heard_{n}": heard_ua(head, val["raw"], val["labels"], val["speakers"], n, 5, seed)
            for n in (0, 10)
        }
        log.info("validation speakers: %s", fitted["val"])
    head.fitted = fitted
    return head
