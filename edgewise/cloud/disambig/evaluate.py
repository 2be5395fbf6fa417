"""Audio only vs audio + text vs text only: which reading did the speaker mean?

Each condition trains :mod:`.classifier`'s head on the train speakers, stops on the val speakers
and is scored on the test speakers, once per seed: accuracy overall and per kind (and per
template, averaged over seeds). The text-only control sees the same text for every reading of a
template, so it can do no better than chance (one reading per template): if it does, the corpus
leaks the answer through its text. Chance is the mean over test utterances of 1 / the number of
readings of their template.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.cloud.data.corpus import SPLITS
from edgewise.cloud.disambig.classifier import HeadConfig, Split, predict, standardize, train_head
from edgewise.cloud.disambig.corpus import DisambigCorpus, Item
from edgewise.errors import ConfigError

log = logging.getLogger(__name__)

CONDITIONS = {"audio": "audio only", "audio+text": "audio + text", "text": "text only (control)"}
REPORT_VERSION = 1


@dataclass
class Features:
    """Every item's features, rows in the corpus's item order."""

    audio: dict[str, np.ndarray]
    text: np.ndarray
    text_encoder: str
    run: str | None = None
    seconds: float = 0.0


def extract_features(
    corpus: DisambigCorpus,
    blocks: Sequence[str],
    run: str | Path | None = None,
    *,
    text_encoder: str = "auto",
    threads: int = 1,
    progress: bool = False,
) -> Features:
    from edgewise.cloud.disambig.features import audio_features, text_features

    started = time.perf_counter()
    audio = audio_features([it.path for it in corpus.items], blocks, run, threads=threads, progress=progress)
    text, encoder = text_features([it.text for it in corpus.items], text_encoder)
    return Features(audio, text, encoder, None if run is None else str(run), time.perf_counter() - started)


def compare(
    corpus: DisambigCorpus,
    features: Features,
    seeds: Sequence[int],
    *,
    blocks: Sequence[str] | None = None,
    head: HeadConfig | None = None,
    conditions: Sequence[str] = tuple(CONDITIONS),
) -> dict[str, Any]:
    """Train and score each of ``conditions`` for every seed; the report as a JSON-ready dict."""
    head = head or HeadConfig()
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ConfigError(f"unknown condition(s) {', '.join(unknown)}; expected {', '.join(CONDITIONS)}")
    blocks = list(blocks or features.audio)
    missing = [b for b in blocks if b not in features.audio]
    if missing:
        raise ConfigError(f"no {', '.join(missing)} features were extracted")
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    index = {s: np.array([i for i, it in enumerate(corpus.items) if it.split == s]) for s in SPLITS}
    for s in SPLITS:
        corpus.split(s)  # an empty split is an error naming it
    audio_all = np.concatenate([features.audio[b] for b in blocks], axis=1)
    audio = dict(zip(SPLITS, standardize(*(audio_all[index[s]] for s in SPLITS))))
    labels = {s: np.array([corpus.items[i].reading for i in index[s]]) for s in SPLITS}
    text = {s: features.text[index[s]] for s in SPLITS}
    inputs = {
        "audio": lambda s: Split(audio[s], None, labels[s]),
        "audio+text": lambda s: Split(audio[s], text[s], labels[s]),
        "text": lambda s: Split(None, text[s], labels[s]),
    }
    test_items = [corpus.items[i] for i in index["test"]]
    started = time.perf_counter()
    results = {}
    for name in conditions:
        make = inputs[name]
        per_seed, predictions = [], []
        for seed in seeds:
            model, fit = train_head(make("train"), make("val"), corpus.n_classes, seed, head)
            pred = predict(model, make("test"))
            predictions.append(pred)
            per_seed.append({"seed": seed, **scores(test_items, pred), **asdict(fit)})
            log.info(
                "%s, seed %d: test accuracy %.3f (val %.3f at epoch %d)",
                CONDITIONS[name], seed, per_seed[-1]["test_accuracy"], fit.val_accuracy, fit.best_epoch,
            )  # fmt: skip
        results[name] = summarize(name, per_seed, test_items, predictions)
    return {
        "schema_version": REPORT_VERSION,
        "corpus": describe_corpus(corpus),
        "features": {
            "audio_blocks": {b: int(features.audio[b].shape[1]) for b in blocks},
            "run": features.run if "ser" in blocks else None,
            "text_encoder": features.text_encoder,
            "text_dims": int(features.text.shape[1]),
        },
        "head": asdict(head),
        "seeds": list(seeds),
        "chance": chance(test_items),
        "conditions": results,
        "seconds": {
            "features": round(features.seconds, 1),
            "training": round(time.perf_counter() - started, 1),
        },
    }


def scores(items: Sequence[Item], pred: np.ndarray) -> dict[str, Any]:
    correct = np.array([it.reading for it in items]) == pred
    kinds = sorted({it.kind for it in items})
    return {
        "test_accuracy": float(correct.mean()),
        "per_kind": {k: float(correct[[it.kind == k for it in items]].mean()) for k in kinds},
    }


def summarize(
    name: str, per_seed: list[dict[str, Any]], items: Sequence[Item], predictions: list[np.ndarray]
) -> dict[str, Any]:
    overall = [r["test_accuracy"] for r in per_seed]
    kinds = sorted(per_seed[0]["per_kind"])
    correct = np.mean([np.array([it.reading for it in items]) == p for p in predictions], axis=0)
    templates = sorted({it.template for it in items})
    return {
        "label": CONDITIONS[name],
        "test_accuracy": _mean_std(overall),
        "per_kind": {k: _mean_std([r["per_kind"][k] for r in per_seed]) for k in kinds},
        "per_template": {
            t: round(float(correct[[it.template == t for it in items]].mean()), 4) for t in templates
        },
        "per_seed": per_seed,
    }


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4)}


def chance(items: Sequence[Item]) -> dict[str, Any]:
    """Expected accuracy of a uniform guess among each template's readings."""
    guess = np.array([1.0 / it.n_readings for it in items])
    kinds = sorted({it.kind for it in items})
    return {
        "test_accuracy": round(float(guess.mean()), 4),
        "per_kind": {k: round(float(guess[[it.kind == k for it in items]].mean()), 4) for k in kinds},
    }


def describe_corpus(corpus: DisambigCorpus) -> dict[str, Any]:
    return {
        "root": str(corpus.root),
        "source": corpus.info.get("source", "synthesized" if "generator" in corpus.info else "unknown"),
        "utterances": {s: sum(it.split == s for it in corpus.items) for s in SPLITS},
        "speakers": {s: len({it.speaker for it in corpus.items if it.split == s}) for s in SPLITS},
        "templates": len({it.template for it in corpus.items}),
        "kinds": corpus.kinds,
        "test_per_kind": {
            k: sum(it.split == "test" and it.kind == k for it in corpus.items) for k in corpus.kinds
        },
    }


def markdown(report: dict[str, Any], title: str = "Prosodic disambiguation") -> str:
    """A short Markdown table: conditions x (overall, each kind), mean ± std over seeds."""
    kinds = report["corpus"]["kinds"]
    corpus, feats = report["corpus"], report["features"]
    blocks = " + ".join(f"{b} ({d})" for b, d in feats["audio_blocks"].items())
    lines = [
        f"### {title}",
        "",
        f"Test accuracy of the intended reading, mean ± std over seeds {', '.join(map(str, report['seeds']))}; "
        f"{corpus['utterances']['test']} test utterances by {corpus['speakers']['test']} unseen speakers, "
        f"{corpus['templates']} templates. Audio features: {blocks}"
        + (f" from `{feats['run']}`" if feats.get("run") else "")
        + f"; text: {feats['text_encoder']} of the template's text.",
        "",
        "| condition | overall | " + " | ".join(kinds) + " |",
        "|---|---|" + "---|" * len(kinds),
    ]
    for cond in report["conditions"].values():
        cells = [_cell(cond["test_accuracy"])] + [_cell(cond["per_kind"][k]) for k in kinds]
        lines.append(f"| {cond['label']} | " + " | ".join(cells) + " |")
    ch = report["chance"]
    lines.append(
        "| chance | "
        + " | ".join([f"{ch['test_accuracy']:.3f}"] + [f"{ch['per_kind'][k]:.3f}" for k in kinds])
        + " |"
    )
    return "\n".join(lines) + "\n"


def _cell(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"
