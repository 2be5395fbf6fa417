"""The ``edgewise`` command line: one entry point, subcommands, exit codes scripts can rely on.

Each command lives in its own module exposing ``<name>_add_arguments(parser)`` and
``<name>_run(args) -> int``; this file only wires them up. Command modules keep heavy imports
(torch, onnxruntime) inside their run functions so ``--help`` stays fast and torch-free.

Exit codes: 0 success, 1 internal error (a bug, traceback shown), 2 user error (message only),
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edgewise import __version__
from edgewise.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, EdgewiseError

log = logging.getLogger("edgewise")

# (group, command or None, module, handler prefix, help)
COMMANDS: list[tuple[str, str | None, str, str, str]] = [
    (
        "data",
        "speech",
        "edgewise.cloud.data.commands",
        "speech",
        "synthesize a labelled emotional-speech corpus with espeak-ng",
    ),
    (
        "data",
        "tts",
        "edgewise.cloud.data.commands",
        "tts",
        "make a TTS corpus: a teacher voice speaks generated text (sequence-level distillation)",
    ),
    (
        "data",
        "inspect",
        "edgewise.cloud.data.commands",
        "inspect",
        "summarize a corpus: utterances per split and label, speakers, duration",
    ),
    (
        "data",
        "rec",
        "edgewise.cloud.data.rec_commands",
        "rec",
        "make a recommendation dataset: ml-100k, a MovieLens directory, your CSV/Parquet, or synthetic",
    ),
    (
        "train",
        "ser",
        "edgewise.cloud.train.commands",
        "train_ser",
        "train a speech-emotion model (HRF, distillation, DDP under torchrun)",
    ),
    (
        "train",
        "ser-adapter",
        "edgewise.cloud.train.commands",
        "train_ser_adapter",
        "fit the device's speaker adaptation for an SER run (prosody + logits, per-speaker statistics)",
    ),
    (
        "train",
        "tts",
        "edgewise.cloud.train.tts_commands",
        "train_tts",
        "train the prosody-aware flow-matching TTS acoustic model (HRF)",
    ),
    (
        "train",
        "vocoder",
        "edgewise.cloud.train.tts_commands",
        "train_vocoder",
        "train the Vocos-style iSTFT vocoder on a TTS corpus (HRF)",
    ),
    (
        "train",
        "rec",
        "edgewise.cloud.train.rec_commands",
        "train_rec",
        "train a recommender: lazy decoder-only, encoder-decoder or SASRec (semantic IDs, HRF, distillation)",
    ),
    (
        "train",
        "align",
        "edgewise.cloud.train.rec_align",
        "train_align",
        "align a generative recommender with user feedback (simulator or reward model, DARS, GBPO/ECPO)",
    ),
    ("eval", "ser", "edgewise.cloud.train.commands", "eval_ser", "evaluate a trained run on a corpus split"),
    (
        "eval",
        "rec",
        "edgewise.cloud.train.rec_commands",
        "eval_rec",
        "evaluate a rec run: HR@K and NDCG@K by full ranking, invalid-ID rate",
    ),
    (
        "eval",
        "baseline",
        "edgewise.cloud.train.commands",
        "eval_baseline",
        "grade a corpus with the eGeMAPS + logistic-regression baseline",
    ),
    (
        "data",
        "disambig",
        "edgewise.cloud.disambig.commands",
        "disambig",
        "make a prosodic-disambiguation corpus: one text, readings told apart by pauses, stress or intonation",
    ),
    (
        "eval",
        "disambig",
        "edgewise.cloud.disambig.commands",
        "eval_disambig",
        "which reading was meant: audio only vs audio + text vs text only, per kind, over seeds",
    ),
    (
        "eval",
        "semisup",
        "edgewise.cloud.semisup.command",
        "eval_semisup",
        "multi-view pseudo-labelling against supervised training and self-training, by labelled fraction",
    ),
    (
        "export",
        None,
        "edgewise.export.commands",
        "export",
        "merge, quantize and export a run, check each artifact against PyTorch, write a bundle",
    ),
    ("bundle", "inspect", "edgewise.export.commands", "bundle_inspect", "summarize a bundle"),
    (
        "bundle",
        "verify",
        "edgewise.export.commands",
        "bundle_verify",
        "check a bundle's manifest, artifact hashes and (with --key) signature",
    ),
    ("bundle", "sign", "edgewise.export.commands", "bundle_sign", "sign a bundle's manifest with ed25519"),
    ("bundle", "keygen", "edgewise.export.commands", "bundle_keygen", "make an ed25519 signing key pair"),
    (
        "bench",
        None,
        "edgewise.bench.commands",
        "bench",
        "benchmark a bundle's artifacts on this device or over ssh",
    ),
    (
        "bench",
        "para",
        "edgewise.cloud.para.command",
        "bench_para",
        "paralinguistic benchmark: emotion, gender, accent, rate, pitch by frozen encoders under one protocol",
    ),
    (
        "cloud",
        "serve",
        "edgewise.cloud.serve.commands",
        "serve",
        "serve models: the embedded OpenAI-compatible app, Ray Serve replicas, or vLLM for the large models",
    ),
    (
        "cloud",
        "serve-init",
        "edgewise.cloud.serve.commands",
        "serve_init",
        "write a secure serve config folder: config, token (0600), self-signed certificate",
    ),
    (
        "cloud",
        "ingest",
        "edgewise.cloud.fleet.commands",
        "ingest",
        "move device telemetry from the MQTT broker into the fleet store (shared subscription, several workers)",
    ),
    (
        "cloud",
        "fleet",
        "edgewise.cloud.fleet.commands",
        "fleet",
        "the fleet's devices in the terminal, or its page and /metrics with --serve",
    ),
    (
        "registry",
        "push",
        "edgewise.cloud.registry.commands",
        "push",
        "store a signed bundle in the registry (refused when unsigned, wrongly signed or tampered)",
    ),
    ("registry", "list", "edgewise.cloud.registry.commands", "list", "the registry's bundles and versions"),
    (
        "registry",
        "promote",
        "edgewise.cloud.registry.commands",
        "promote",
        "make a version a fleet's target: each device gets a deploy command",
    ),
    (
        "registry",
        "status",
        "edgewise.cloud.registry.commands",
        "status",
        "a fleet's target version and where each device stands (current, pending, failed)",
    ),
    (
        "registry",
        "pull",
        "edgewise.cloud.registry.commands",
        "pull",
        "download a version, checking its sha256 (and with --key its signature)",
    ),
    (
        "board",
        "create",
        "edgewise.board.commands",
        "board_create",
        "make an emulated arm64 board (rpi5, rpi4, jetson)",
    ),
    ("board", "start", "edgewise.board.commands", "board_start", "start a board's sshd on a loopback port"),
    (
        "board",
        "stop",
        "edgewise.board.commands",
        "board_stop",
        "stop a board: its processes end, nothing stays mounted",
    ),
    ("board", "list", "edgewise.board.commands", "board_list", "list the boards and their state"),
    ("board", "destroy", "edgewise.board.commands", "board_destroy", "stop a board and delete it"),
    (
        "tts",
        None,
        "edgewise.edge.tts_command",
        "tts",
        "speak text with a tts bundle (torch-free): write a wav, play it, print the timings",
    ),
    (
        "recommend",
        None,
        "edgewise.edge.rec_command",
        "recommend",
        "recommend items with a rec bundle (torch-free): a history of item ids in, the next items out",
    ),
    (
        "daemon",
        None,
        "edgewise.edge.commands",
        "daemon",
        "run the device daemon (live audio -> model -> MQTT), or write its systemd unit",
    ),
]

GROUP_HELP = {
    "data": "make or inspect training corpora",
    "train": "train models",
    "eval": "evaluate trained models",
    "bundle": "inspect, verify and sign bundles; make signing keys",
    "board": "emulated arm64 devices under qemu-user, reached over ssh on loopback",
    "registry": "the model registry: signed bundles by name and version, promoted to fleets",
    "cloud": "the cloud half: serve models (and the fleet page and registry), ingest the fleet's telemetry",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgewise",
        description="Train speech models in the cloud, export them, and run them on small devices.",
    )
    parser.add_argument("--version", action="version", version=f"edgewise {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    group_parsers: dict[str, argparse._SubParsersAction] = {}
    flat_parsers: dict[str, argparse.ArgumentParser] = {}
    for group, command, module_name, prefix, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        if command is None:
            sub = flat_parsers[group] = groups.add_parser(group, help=help_text, description=help_text)
        elif group in _flat_groups():  # `bench para` beside `bench BUNDLE`: main() joins the two words
            sub = groups.add_parser(f"{group} {command}", help=help_text, description=help_text)
        else:
            if group not in group_parsers:
                gp = groups.add_parser(group, help=GROUP_HELP.get(group), description=GROUP_HELP.get(group))
                group_parsers[group] = gp.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
            sub = group_parsers[group].add_parser(command, help=help_text, description=help_text)
        getattr(module, f"{prefix}_add_arguments")(sub)
        sub.set_defaults(_handler=(module_name, f"{prefix}_run"))
    for group, command, *_, help_text in COMMANDS:  # a flat command's --help names the ones beside it
        if command is not None and group in flat_parsers:
            flat = flat_parsers[group]
            flat.epilog = f"{flat.epilog or ''}\nsee also: edgewise {group} {command} --help\n  {help_text}\n"
    return parser


def _flat_groups() -> set[str]:
    """Groups that are a command themselves (``bench BUNDLE``) and may also have named commands."""
    return {group for group, command, *_ in COMMANDS if command is None}


def _join_command_words(argv: list[str]) -> list[str]:
    """``bench para ...`` -> ``"bench para" ...`` (its own parser); ``bench BUNDLE ...`` stays as it is."""
    named = {(group, command) for group, command, *_ in COMMANDS if command and group in _flat_groups()}
    for i, word in enumerate(argv):
        if not word.startswith("-"):  # the first word that is not a global flag names the command
            if tuple(argv[i : i + 2]) in named:
                return [*argv[:i], f"{word} {argv[i + 1]}", *argv[i + 2 :]]
            break
    return argv


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if verbose < 1:  # keep third-party chatter out of normal runs
        for noisy in ("matplotlib", "PIL", "urllib3", "torch", "onnxscript", "torchao", "absl", "jax"):
            logging.getLogger(noisy).setLevel(
                logging.ERROR if noisy in ("torchao", "absl", "jax") else logging.WARNING
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_command_words(list(sys.argv[1:] if argv is None else argv)))
    setup_logging(args.verbose, args.quiet)
    module_name, func_name = args._handler
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args) or 0)
    except EdgewiseError as exc:
        print(f"edgewise: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named or must fix: a bug, keep the traceback
            raise
        print(f"edgewise: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("edgewise: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
