"""``edgewise recommend BUNDLE --history ID,ID,...``: recommend once with a rec bundle, torch-free.

Prints the items (best first, with titles and scores) and the timings, or the whole result with
``--json``. The bundle is loaded and warmed up first (``load_ms``), so the request's timings are
those of a resident model, as in the daemon. Bad input (no known item in the history, k above the beam, a bundle whose trie does
not match its semantic IDs) is exit 2 with one message; unknown ids among known ones are dropped
and listed, an empty ``--history ""`` gets the most popular items (README, "edgewise recommend").

``--offload FILE`` (a YAML of the ``offload:`` section, or a daemon.yaml that has one, merged over
the device profile's) runs the cascade as the daemon does (:mod:`edgewise.edge.offload`): a request
for more than the bundle gives (``--k`` above its top_k, ``--beam`` above its beam, ``--candidates
cloud``) goes to the cloud, and the device's answer stands when the cloud fails. The result says
its ``source`` (device, cloud, device-fallback) and why.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def recommend_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="a rec bundle folder or .tar.gz")
    p.add_argument(
        "--history",
        required=True,
        help='the user\'s items, oldest first, as comma-separated item ids ("" for a new user; - reads stdin)',
    )
    p.add_argument("--k", type=int, help="how many items to recommend (default: the bundle's top_k)")
    p.add_argument("--beam", type=int, help="beam width, at least k (default: the bundle's, or k if larger)")
    p.add_argument(
        "--device", default="x86-local", help="device profile that picks the artifacts (default: x86-local)"
    )
    p.add_argument("--key", type=Path, help="the fleet's public key: refuse a bundle it did not sign")
    p.add_argument("--threads", type=int, help="runtime threads (default: the profile's)")
    p.add_argument(
        "--candidates",
        choices=("device", "cloud"),
        help="whose candidate set: cloud asks the cloud's recommender (needs --offload)",
    )
    p.add_argument(
        "--offload",
        type=Path,
        metavar="FILE",
        help="a YAML with the offload section (or a daemon.yaml with offload:): ask the cloud when the "
        "request wants more than the bundle gives",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def parse_history(text: str) -> list[str]:
    """Comma-separated item ids (whitespace around each is ignored, empty entries skipped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def recommend_run(args: argparse.Namespace) -> int:
    from edgewise.devices import load_profile
    from edgewise.edge.offload.cascade import rec_result
    from edgewise.edge.pipelines.rec import RecPipeline
    from edgewise.errors import ConfigError

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    history = parse_history(sys.stdin.read() if args.history == "-" else args.history)
    t0 = time.perf_counter()
    profile = load_profile(args.device)
    if args.candidates == "cloud" and args.offload is None:
        raise ConfigError("--candidates cloud needs --offload FILE: the cloud to ask")
    offload = _offload(args.offload, profile)  # a bad offload section fails before the bundle loads
    pipeline = RecPipeline.from_bundle(args.bundle, profile, public_key=args.key, threads=args.threads)
    pipeline.self_test()  # the graphs' first run (onnxruntime's one-time allocations) is not the request's
    load_ms = (time.perf_counter() - t0) * 1000
    result = pipeline.recommend(history, k=args.k, beam=args.beam)
    result["timings"]["load_ms"] = round(load_ms, 3)
    request = {"history": history, "k": args.k, "beam": args.beam, "candidates": args.candidates}
    s = pipeline.settings
    result = rec_result(
        offload,
        {k: v for k, v in request.items() if v is not None},
        result,
        top_k=s.top_k,
        beam=s.beam,
    )
    result["backend"] = {role: rt.describe()["artifact"] for role, rt in pipeline.runtimes.items()}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for rank, (item, title) in enumerate(zip(result["items"], result["titles"]), 1):
        score = "" if result["scores"] is None else f"  {result['scores'][rank - 1]:.4f}"
        print(f"{rank:3d}. {item}  {title}{score}")
    t = result["timings"]
    print(
        f"{len(result['items'])} items in {t['total_ms']:.2f} ms (context {t['context_ms']:.2f} ms, "
        f"decode {t['decode_ms']:.2f} ms, beam {result['beam']}); bundle loaded in {t['load_ms']:.0f} ms"
    )
    offload = result.get("offload")
    if result["source"] != "device" or offload:
        how = offload["why"] if offload else ""
        if result["source"] == "device-fallback":
            how += f"; the cloud failed: {offload['reason']}"
        elif result["source"] == "cloud":
            how += f" (cloud {offload['timings']['cloud_ms']:.0f} ms)"
        print(f"source: {result['source']} ({how})", file=sys.stderr)
    if result["fallback"] == "popular":
        print("note: empty history: the most popular items of the training data", file=sys.stderr)
    if result["unknown_count"]:
        print(
            f"warning: {result['unknown_count']} unknown item id(s) dropped: {', '.join(result['unknown'][:10])}",
            file=sys.stderr,
        )
    if result["truncated"]:
        print(
            f"note: the history's {result['truncated']} oldest known item(s) were left out "
            f"(the model reads the most recent {pipeline.settings.max_len})",
            file=sys.stderr,
        )
    return 0


def _offload(path: Path | None, profile):  # noqa: ANN001, ANN202
    """The cascade of ``--offload FILE`` (merged over the profile's section), or None."""
    if path is None:
        return None
    from edgewise.config import read_yaml
    from edgewise.edge.offload import resolve_offload
    from edgewise.edge.offload.cascade import Offload
    from edgewise.errors import ConfigError

    data = read_yaml(path)
    section = data["offload"] if isinstance(data.get("offload"), dict) else data
    config = resolve_offload(profile.offload, section, str(path))
    if config is None:
        raise ConfigError(f"{path}: offload is disabled (enabled: false)")
    return Offload.from_config(config)
