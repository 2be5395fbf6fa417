"""CLI handlers: ``edgewise data disambig`` and ``edgewise eval disambig``.

Module-level imports stay light (the CLI imports this to build ``--help``); numpy, torch, the
synthesizer and the text model are imported inside the run functions.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_SPEAKERS = 24
DEFAULT_BLOCKS = ("prosody", "contour")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def disambig_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Make a prosodic-disambiguation corpus: the same text spoken with different pauses, stress or "
        "intonation means different things. Synthesizes every reading of every template (phrase "
        "grouping, contrastive focus, statement vs question; `edgewise/cloud/disambig/templates.py`) "
        "by every speaker with espeak-ng, split by speaker, in the corpus format with label = the "
        "reading's index; or, with --debate, converts a DEBATE-style release. The same --seed gives "
        "identical files; DIR is built aside and renamed at the end."
    )
    p.epilog = (
        "--debate ROOT reads ROOT/metadata.csv (or metadata.jsonl), one row per recording: audio (a path "
        "under ROOT), text, meanings (' | '-separated, or a JSON list), answer (0-based index or A, B, ...), "
        "speaker, task (pause, stress or pronunciation) and optionally item; see "
        "edgewise/cloud/disambig/debate.py. Bad rows are listed by file, row and column."
    )
    p.add_argument("--out", required=True, type=Path, help="corpus directory to create")
    p.add_argument(
        "--debate",
        type=Path,
        metavar="ROOT",
        help="convert the DEBATE-style release at ROOT instead of synthesizing",
    )
    p.add_argument(
        "--n-speakers",
        type=_positive_int,
        help=f"speakers (espeak-ng voices), 3 to 60, split by speaker (default: {DEFAULT_SPEAKERS})",
    )
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument(
        "--workers", type=_positive_int, help="parallel synthesis jobs (default: one per CPU core)"
    )
    p.add_argument(
        "--kinds", type=_names, metavar="K,...", help="only these kinds: grouping, focus, question"
    )
    p.add_argument("--templates", type=_names, metavar="ID,...", help="only these template ids")
    p.add_argument(
        "--template-file",
        type=Path,
        metavar="FILE.yaml",
        help="your own table instead of the built-in one: templates: [{id, kind, text, readings: [{meaning, ssml}]}]",
    )
    p.add_argument("--no-noise", action="store_true", help="no background noise")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing corpus at --out (once the new one is complete)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def disambig_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from edgewise.errors import ConfigError

    progress = not args.no_progress and sys.stderr.isatty()
    started = time.perf_counter()
    if args.debate is not None:
        synth_only = [
            flag
            for flag, value in (
                ("--n-speakers", args.n_speakers),
                ("--seed", args.seed),
                ("--workers", args.workers),
                ("--kinds", args.kinds),
                ("--templates", args.templates),
                ("--template-file", args.template_file),
                ("--no-noise", args.no_noise or None),
            )
            if value is not None
        ]
        if synth_only:
            raise ConfigError(f"{', '.join(synth_only)}: only for synthesis, not with --debate")
        from edgewise.cloud.disambig.debate import convert_debate

        corpus = convert_debate(args.debate, args.out, force=args.force, progress=progress)
    else:
        from edgewise.cloud.disambig.synth import DisambigSettings, synthesize_disambig
        from edgewise.cloud.disambig.templates import load_templates, select_templates

        templates = select_templates(load_templates(args.template_file), args.kinds, args.templates)
        settings = DisambigSettings()
        if args.no_noise:
            settings = replace(settings, channel=replace(settings.channel, noise_snr_db=None))
        corpus = synthesize_disambig(
            args.out,
            templates,
            args.n_speakers or DEFAULT_SPEAKERS,
            0 if args.seed is None else args.seed,
            workers=args.workers,
            settings=settings,
            force=args.force,
            progress=progress,
        )
    sizes = ", ".join(f"{split} {sum(c.values())}" for split, c in corpus.counts().items())
    log.info(
        "disambiguation corpus ready at %s: %d files (%s) in %.1f s",
        corpus.root, len(corpus.utterances), sizes, time.perf_counter() - started,
    )  # fmt: skip
    return 0


def eval_disambig_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compare classifiers of the intended reading on a disambiguation corpus: audio only (prosodic "
        "functionals, a coarse prosodic contour and, with --run, a frozen SER run's pooled hidden "
        "state), audio + text (the same plus the template's text, MiniLM if installed, else hashed "
        "words; the text conditions the audio layer, so template-specific cues can be learned) and a "
        "text-only control (at chance: the text is the same for every reading). Train speakers, early "
        "stopping on val, test accuracy overall and per kind over seeds: FILE.json and FILE.md."
    )
    p.add_argument("--data", required=True, type=Path, help="a corpus made by `edgewise data disambig`")
    p.add_argument(
        "--out", required=True, type=Path, help="the report, FILE.json (FILE.md is written beside it)"
    )
    p.add_argument("--run", type=Path, metavar="SER_RUN", help="add a finished SER run's pooled hidden state")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument(
        "--audio-features",
        type=_names,
        default=DEFAULT_BLOCKS,
        metavar="B,...",
        help=f"audio blocks among prosody, contour (default: {','.join(DEFAULT_BLOCKS)}); --run adds ser",
    )
    p.add_argument(
        "--text-encoder",
        choices=["auto", "minilm", "hashed"],
        default="auto",
        help="the text's features: MiniLM (offline wheel), hashed words, or MiniLM when installed (default)",
    )
    p.add_argument("--max-epochs", type=_positive_int, default=300, help="per training (default: 300)")
    p.add_argument(
        "--patience", type=_positive_int, default=40, help="epochs without a better val (default: 40)"
    )
    p.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default: 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def eval_disambig_run(args: argparse.Namespace) -> int:
    from edgewise.errors import ConfigError

    if args.out.suffix != ".json":
        raise ConfigError(f"--out {args.out}: expected a .json file (the .md is written beside it)")
    if "ser" in args.audio_features:
        raise ConfigError("--audio-features: ser is added by --run RUN, not named")

    import torch

    from edgewise.cloud.disambig.classifier import HeadConfig
    from edgewise.cloud.disambig.corpus import load_disambig
    from edgewise.cloud.disambig.evaluate import compare, extract_features, markdown
    from edgewise.fsutil import write_text_atomic

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    corpus = load_disambig(args.data)
    blocks = [*args.audio_features, *(["ser"] if args.run else [])]
    features = extract_features(
        corpus,
        blocks,
        args.run,
        text_encoder=args.text_encoder,
        threads=args.threads,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    head = HeadConfig(max_epochs=args.max_epochs, patience=args.patience)
    report = compare(corpus, features, args.seeds, blocks=blocks, head=head)
    report["command"] = command_line(args)
    report["seconds"]["total"] = round(time.perf_counter() - started, 1)
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The ``edgewise eval disambig`` command that gives this report (for the report's record)."""
    words = ["edgewise", "eval", "disambig", "--data", str(args.data), "--out", str(args.out)]
    if args.run:
        words += ["--run", str(args.run)]
    words += ["--seeds", *map(str, args.seeds), "--audio-features", ",".join(args.audio_features)]
    words += ["--text-encoder", args.text_encoder, "--max-epochs", str(args.max_epochs)]
    return shlex.join([*words, "--patience", str(args.patience)])
