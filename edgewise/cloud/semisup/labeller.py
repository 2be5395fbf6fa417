"""Pseudo-labelling rounds: the multi-view labeller and the two baselines it is measured against.

A :class:`Problem` is one draw of a labelled fraction: the training split is the pool (its labelled
rows, the rest unlabelled), the validation split keeps the same fraction of its labels (the
stopping rule and the heads' early stopping see only those), and the test split is scored.

Every method trains the same bimodal classifier (the paralinguistic benchmark's MLP head on the
audio encoders' features concatenated with the transcripts' embeddings) and relabels the whole
unlabelled rest each round from scratch, so an early mistake can be taken back:

- ``supervised``: the labelled rows only;
- ``self-training``: each round adds every unlabelled row the current classifier gives a
  probability of at least ``self_threshold``;
- ``multi-view``: each round adds the unlabelled rows whose classifier class is also the vote of
  the informative views (acoustic Frechet views and the transcript classifier), weighed by how far
  each beats chance on the labelled rows (cross-validated), with a share of at least ``agree``.

The stopping rule (both iterative methods): at most ``rounds`` rounds; stop when the pseudo-labelled
set changes by less than ``min_change`` of the unlabelled rows, or when the labelled validation UA
has not improved for ``patience`` rounds. The round with the best validation UA is kept.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from edgewise.cloud.para.protocol import HeadConfig, LayerWeightedHead, fit_head
from edgewise.cloud.semisup.acoustic import FadView
from edgewise.cloud.train.metrics import classification_report

METHODS = ("supervised", "self-training", "multi-view")


def ua(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> float:
    return float(classification_report(np.asarray(y_true), np.asarray(y_pred), tuple(classes))["ua"])


@dataclass(frozen=True)
class LabellerConfig:
    rounds: int = 5
    patience: int = 2
    min_change: float = 0.01
    agree: float = 0.5
    min_confidence: float = 0.5
    chance_margin: float = 0.05
    self_threshold: float = 0.9
    k: int = 16
    dims: int = 16
    shrink: float = 0.2
    folds: int = 5
    speaker_norm: bool = True
    head: HeadConfig = field(default_factory=lambda: HeadConfig(max_epochs=60, patience=8))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Problem:
    """One draw: features are standardized already (``x_*``: (n, 1, dims) float32)."""

    classes: tuple[str, ...]
    x_pool: np.ndarray
    y_pool: np.ndarray  # the truth; only ``labelled`` rows are used for training
    x_val: np.ndarray
    y_val: np.ndarray  # only ``val_rows`` are used
    x_test: np.ndarray
    y_test: np.ndarray
    labelled: np.ndarray  # pool indices
    val_rows: np.ndarray  # val indices
    speakers: np.ndarray | None = None  # the pool's speakers (the acoustic views normalize per speaker)

    @property
    def unlabelled(self) -> np.ndarray:
        mask = np.ones(len(self.x_pool), dtype=bool)
        mask[self.labelled] = False
        return np.flatnonzero(mask)


def stratified_fraction(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``fraction`` of the rows of every class (at least 2 per class)."""
    picked = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        n = len(rows) if fraction >= 1.0 else max(2, int(round(fraction * len(rows))))
        picked.append(rng.permutation(rows)[:n])
    return np.sort(np.concatenate(picked))


class Classifier:
    """The bimodal classifier of one round: the MLP head, early-stopped on the labelled val rows."""

    def __init__(self, problem: Problem, rows: np.ndarray, labels: np.ndarray, seed: int, cfg: HeadConfig):
        n_classes = len(problem.classes)
        x_val = torch.from_numpy(problem.x_val[problem.val_rows])
        y_val = problem.y_val[problem.val_rows]

        def val_score(head: LayerWeightedHead) -> float:
            with torch.no_grad():
                pred = head(x_val).argmax(dim=1).numpy()
            return ua(y_val, pred, problem.classes)

        x = torch.from_numpy(problem.x_pool[rows])
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.head, self.val_ua, _, _ = fit_head(x, y, nn.CrossEntropyLoss(), n_classes, val_score, seed, cfg)

    def proba(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(self.head(torch.from_numpy(x)), dim=1).numpy().astype(np.float64)

    def test_ua(self, problem: Problem) -> float:
        pred = self.proba(problem.x_test).argmax(axis=1)
        return ua(problem.y_test, pred, problem.classes)


@dataclass
class ViewVotes:
    """A view's votes on the pool and its cross-validated UA on the labelled rows."""

    name: str
    votes: np.ndarray  # (n_pool,) class indices
    ua: float


def build_views(
    features: dict[str, np.ndarray], speakers: np.ndarray | None, cfg: LabellerConfig
) -> list[FadView]:
    """One :class:`FadView` per encoder (``features``: name -> pool features (n_pool, ...)); they
    use no labels, so one set serves every fraction and seed."""
    speakers = speakers if cfg.speaker_norm else None
    return [
        FadView.build(name, feats, dims=cfg.dims, k=cfg.k, shrink=cfg.shrink, speakers=speakers)
        for name, feats in features.items()
    ]


def acoustic_votes(
    problem: Problem, views: Sequence[FadView], cfg: LabellerConfig, seed: int
) -> list[ViewVotes]:
    """Each view's votes with the classes fitted on this draw's labelled rows, and its UA by k-fold
    cross-validation over them."""
    n_classes = len(problem.classes)
    labels = problem.y_pool[problem.labelled]
    out = []
    for view in views:
        name = view.name
        cv = view.cross_validated_votes(problem.labelled, labels, n_classes, cfg.folds, seed)
        score = ua(labels, cv, problem.classes)
        out.append(ViewVotes(name, view.votes(problem.labelled, labels, n_classes), score))
    return out


def text_votes(
    problem: Problem, transcripts: Sequence[str], classifier, cfg: LabellerConfig, seed: int
) -> ViewVotes:
    """The transcript classifier as a view: fitted on the labelled rows' transcripts (its UA by
    k-fold cross-validation over them), then voting on every pool row."""
    labels = problem.y_pool[problem.labelled]
    texts = [transcripts[i] for i in problem.labelled]
    fold = np.random.default_rng(seed).permutation(len(texts)) % cfg.folds
    cv = np.empty(len(texts), dtype=np.int64)
    for f in range(cfg.folds):
        held = fold == f
        classifier.fit([t for t, h in zip(texts, held) if not h], labels[~held], problem.classes)
        cv[held] = classifier.predict_proba([t for t, h in zip(texts, held) if h]).argmax(axis=1)
    classifier.fit(texts, labels, problem.classes)
    votes = classifier.predict_proba(list(transcripts)).argmax(axis=1)
    return ViewVotes(getattr(classifier, "name", "text"), votes, ua(labels, cv, problem.classes))


def view_weights(views: Sequence[ViewVotes], n_classes: int, margin: float) -> np.ndarray:
    """How far each view's UA beats chance; 0 for a view within ``margin`` of chance."""
    gain = np.array([v.ua - 1.0 / n_classes for v in views])
    return np.where(gain > margin, gain, 0.0)


@dataclass
class MethodResult:
    method: str
    test_ua: float
    val_ua: float
    rounds: list[dict]  # per round: pseudo-labelled count, their accuracy (against the hidden truth), val UA
    kept_round: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_method(
    method: str,
    problem: Problem,
    seed: int,
    cfg: LabellerConfig,
    views: Sequence[ViewVotes] = (),
) -> MethodResult:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    t0 = time.perf_counter()
    labelled, unlabelled = problem.labelled, problem.unlabelled
    n_classes = len(problem.classes)
    weights = view_weights(views, n_classes, cfg.chance_margin)
    base = Classifier(problem, labelled, problem.y_pool[labelled], seed, cfg.head)
    best, best_round = base, 0
    rounds = [{"round": 0, "pseudo": 0, "pseudo_accuracy": None, "val_ua": round(base.val_ua, 4)}]
    if method == "supervised" or len(unlabelled) == 0:
        return _result(method, problem, best, rounds, best_round, t0)
    current, stale = base, 0
    chosen = np.full(len(unlabelled), -1)  # the pseudo-label of each unlabelled row, -1: none
    for r in range(1, cfg.rounds + 1):
        proba = current.proba(problem.x_pool[unlabelled])
        guess = proba.argmax(axis=1)
        if method == "self-training":
            keep = proba.max(axis=1) >= cfg.self_threshold
        elif weights.sum() == 0:  # no view beats chance: nothing the views can confirm
            keep = np.zeros(len(unlabelled), dtype=bool)
        else:
            agreeing = sum(
                w * (v.votes[unlabelled] == guess) for v, w in zip(views, weights, strict=True) if w > 0
            )
            share = agreeing / weights.sum()
            keep = (share >= cfg.agree) & (proba.max(axis=1) >= cfg.min_confidence)
        new = unlabelled[keep]
        labels_now = np.where(keep, guess, -1)
        change = int((labels_now != chosen).sum())  # rows added, dropped or relabelled
        if change < cfg.min_change * len(unlabelled):
            break
        chosen = labels_now
        rows = np.concatenate([labelled, new])
        labels = np.concatenate([problem.y_pool[labelled], guess[keep]])
        current = Classifier(problem, rows, labels, seed, cfg.head)
        accuracy = float((guess[keep] == problem.y_pool[new]).mean()) if len(new) else None
        rounds.append(
            {
                "round": r,
                "pseudo": int(len(new)),
                "pseudo_accuracy": None if accuracy is None else round(accuracy, 4),
                "val_ua": round(current.val_ua, 4),
            }
        )
        if current.val_ua > best.val_ua + 1e-9:
            best, best_round, stale = current, r, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    return _result(method, problem, best, rounds, best_round, t0)


def _result(method, problem, best: Classifier, rounds, best_round, t0) -> MethodResult:
    return MethodResult(
        method=method,
        test_ua=round(best.test_ua(problem), 4),
        val_ua=round(best.val_ua, 4),
        rounds=rounds,
        kept_round=best_round,
        seconds=round(time.perf_counter() - t0, 2),
    )
