"""Fuzz the parsers that read untrusted bytes: 10^5+ cases each, counting crashes.

A crash is any exception other than the parser's own error: a command must always give an ack
(``CommandRunner.run``) and ``parse_command`` raise only ``PayloadError``; a telemetry payload
decode raises only ``PayloadError``; ``parse_manifest`` raises only ``BundleError``.

The cases: the suite's Hypothesis strategies (``tests/edge/telemetry/strategies.py``) draw a pool
of inputs, then a mutation fuzzer (byte flips, inserts, deletions, splices between pool inputs,
JSON tokens, truncation, deep nesting, and replacing one node of a parsed input with a random JSON
value) makes the rest from that pool, seeded, so a run is repeatable. Writes
``OUT/fuzz_parsers.{json,md}``::

    .venv/bin/python benchmarks/fuzz_parsers.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the strategies and the bundle writer of the test suite

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from report_files import write_report  # noqa: E402

from edgewise.bundle import BundleError, parse_manifest  # noqa: E402
from edgewise.edge.telemetry.commands import CommandRunner, parse_command  # noqa: E402
from edgewise.edge.telemetry.schema import CommandAck, PayloadError, decode  # noqa: E402
from tests.edge.telemetry import strategies  # noqa: E402

TOKENS = [
    b"[",
    b"]",
    b"{",
    b"}",
    b'"',
    b"\\",
    b",",
    b":",
    b"NaN",
    b"Infinity",
    b"1e999",
    b"-",
    b"null",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\\u0000",
    b"\\ud800",
    b'"id":',
    b'"action":"status"',
    b"9" * 5000,
]


def pool_from(strategy: st.SearchStrategy[bytes], n: int, seed: int) -> list[bytes]:
    pool: list[bytes] = []

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(raw: bytes) -> None:
        pool.append(raw)

    draw._hypothesis_internal_use_seed = seed  # repeatable draws
    draw()
    return pool


def random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 2**63, -(2**70), rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, float("nan"), float("inf"), rng.uniform(-1e6, 1e6)])
    if kind in (4, 5):
        return "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x10FFFF)]))
            for _ in range(rng.randrange(6))
        )
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_json_key(rng): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def random_json_key(rng: random.Random) -> str:
    return rng.choice(
        [
            "id",
            "action",
            "args",
            "schema",
            "type",
            "name",
            "version",
            "models",
            "artifacts",
            "path",
            "sha256",
            "labels",
            "task",
            "preprocessing",
            "x",
            "",
        ]
    )


def replace_node(rng: random.Random, obj: object) -> object:
    """``obj`` with one node somewhere in it replaced by a random JSON value."""
    if not isinstance(obj, (dict, list)) or not obj or rng.random() < 0.25:
        return random_json(rng)
    if isinstance(obj, dict):
        key = rng.choice(list(obj))
        if rng.random() < 0.15:
            del obj[key]
        else:
            obj[key] = replace_node(rng, obj[key])
    else:
        i = rng.randrange(len(obj))
        obj[i] = replace_node(rng, obj[i])
    return obj


def mutate(rng: random.Random, pool: list[bytes]) -> bytes:
    raw = bytearray(rng.choice(pool))
    if rng.random() < 0.3:  # structure-aware: change one node of the parsed input
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):
            pass
        else:
            return json.dumps(replace_node(rng, obj), allow_nan=True).encode()
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(8)
        at = rng.randrange(len(raw) + 1)
        if op == 0 and raw:
            raw[min(at, len(raw) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
        elif op == 2:
            del raw[at : at + rng.randrange(1, 16)]
        elif op == 3:
            other = rng.choice(pool)
            cut = rng.randrange(len(other) + 1)
            raw = raw[:at] + other[cut:]
        elif op == 4:
            raw[at:at] = rng.choice(TOKENS)
        elif op == 5:
            raw = raw[:at]
        elif op == 6 and rng.random() < 0.05:
            depth = rng.choice([40, 100, 1000, 5000])
            raw = bytearray(strategies.nested(depth, raw.decode("utf-8", "replace") or "1").encode())
        else:
            raw[at:at] = raw[at : at + rng.randrange(1, 32)]  # duplicate a run
    return bytes(raw)


def fuzz(
    name: str,
    target: Callable[[bytes], None],
    allowed: tuple[type[BaseException], ...],
    pool: list[bytes],
    cases: int,
    rng: random.Random,
) -> dict:
    crashes: dict[str, dict] = {}
    start = time.perf_counter()
    for i in range(cases):
        raw = pool[i] if i < len(pool) else mutate(rng, pool)
        try:
            target(raw)
        except allowed:
            pass
        except Exception as exc:  # a crash: keep the shortest input per exception type
            key = type(exc).__name__
            entry = crashes.setdefault(key, {"count": 0, "message": str(exc)[:200], "shortest": None})
            entry["count"] += 1
            if entry["shortest"] is None or len(raw) < len(entry["shortest"]):
                entry["shortest"] = raw
    seconds = time.perf_counter() - start
    for entry in crashes.values():
        shortest = entry["shortest"]
        entry["shortest"] = f"{len(shortest)} bytes: {shortest[:120]!r}" + (
            " ..." if len(shortest) > 120 else ""
        )
    return {
        "parser": name,
        "cases": cases,
        "from_hypothesis": min(len(pool), cases),
        "crashes": sum(e["count"] for e in crashes.values()),
        "crash_kinds": crashes,
        "seconds": round(seconds, 1),
    }


RUNNER = CommandRunner(source="cmd", max_bytes=1 << 20)


def run_command(raw: bytes) -> None:
    ack = RUNNER.run(raw, lambda c: {"id": c.id})
    if not isinstance(ack, CommandAck):
        raise AssertionError(f"not an ack: {ack!r}")
    with contextlib.suppress(PayloadError):
        parse_command(raw)


def markdown(report: dict) -> str:
    lines = [
        "# Parser fuzzing",
        "",
        f"Hypothesis pool of {report['pool']} inputs per parser, then seeded mutations (seed {report['seed']}).",
        "A crash is any exception other than the parser's own error.",
        "",
        "| parser | cases | from Hypothesis | crashes | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['parser']} | {r['cases']:,} | {r['from_hypothesis']:,} | {r['crashes']:,} | {r['seconds']} |"
        )
    for r in report["results"]:
        for kind, e in r["crash_kinds"].items():
            lines.append(
                f"\n`{r['parser']}`: {e['count']} x {kind}: {e['message']}; shortest input {e['shortest']}"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--cases", type=int, default=100_000, help="cases per parser")
    ap.add_argument("--pool", type=int, default=1000, help="inputs drawn by Hypothesis per parser")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)  # the command path logs every refusal

    from tests.core.test_bundle import write_ser

    with tempfile.TemporaryDirectory() as tmp:
        seed_manifest = json.loads(
            (write_ser(Path(tmp) / "out", archive=False) / "manifest.json").read_bytes()
        )
    parsers = [
        ("command (CommandRunner.run + parse_command)", run_command, (), strategies.command_bytes),
        ("telemetry payload (schema.decode)", decode, (PayloadError,), strategies.payload_bytes),
        (
            "bundle manifest (bundle.parse_manifest)",
            parse_manifest,
            (BundleError,),
            strategies.manifest_bytes(seed_manifest),
        ),
    ]
    results = []
    for i, (name, target, allowed, strategy) in enumerate(parsers):
        t0 = time.perf_counter()
        pool = pool_from(strategy, args.pool, args.seed + i)
        print(
            f"{name}: {len(pool)} inputs from Hypothesis in {time.perf_counter() - t0:.0f} s", file=sys.stderr
        )
        results.append(fuzz(name, target, allowed, pool, args.cases, random.Random(args.seed + i)))
        print(json.dumps(results[-1])[:400], file=sys.stderr)
    report = {"seed": args.seed, "pool": args.pool, "results": results}
    write_report(args.out, "fuzz_parsers", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
