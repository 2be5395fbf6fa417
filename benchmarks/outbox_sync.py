"""What a power-cut-proof outbox costs: SQLite ``synchronous=normal`` against ``full``.

Every message the device sends is put into the outbox (one committed transaction) and deleted
when the broker acknowledges it. In WAL mode ``normal`` syncs the file only at checkpoints, so a
power cut can roll back the last commits (messages that were put, and acks); ``full`` syncs the
WAL on every commit. Two workloads, in alternating rounds on the same disk:

* ``put+ack``: each message put, then acked on its own (two commits a message; the worst case);
* ``put, ack x100``: each message put, acks in batches of 100 (how the client's pump settles them).

Writes ``OUT/outbox_sync.{json,md}``::

    .venv/bin/python benchmarks/outbox_sync.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report_files import write_report

from edgewise.edge.telemetry.outbox import Outbox

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = b'{"schema":1,"type":"event","label":"happy","probabilities":{"a":0.1}}'.ljust(400, b" ")
MODES = ("normal", "full")
WORKLOADS = ("put+ack", "put, ack x100")


def one_round(folder: Path, mode: str, workload: str, n: int) -> dict:
    path = folder / f"{mode}-{workload.replace(' ', '').replace(',', '').replace('+', '')}.db"
    for leftover in folder.glob(f"{path.name}*"):
        leftover.unlink()
    with Outbox(path, synchronous=mode, max_rows=n + 1) as box:
        put_ms = []
        pending = []
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            seq = box.put("edgewise/bench/dev1/events", PAYLOAD, qos=1, kind="event")
            put_ms.append((time.perf_counter() - t0) * 1000)
            if workload == "put+ack":
                box.ack(seq)
            else:
                pending.append(seq)
                if len(pending) == 100:
                    box.ack_many(pending)
                    pending.clear()
        box.ack_many(pending)
        seconds = time.perf_counter() - start
        assert box.depth() == 0
    put_ms.sort()
    return {
        "msg_per_s": n / seconds,
        "put_p50_ms": put_ms[len(put_ms) // 2],
        "put_p99_ms": put_ms[int(len(put_ms) * 0.99)],
    }


def filesystem(folder: Path) -> str:
    try:
        out = subprocess.run(
            ["df", "-T", str(folder)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        return out[-1].split()[1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def markdown(report: dict) -> str:
    lines = [
        "# Outbox: SQLite synchronous=normal vs full",
        "",
        f"{report['messages']} messages of {report['payload_bytes']} bytes per round, {report['rounds']} "
        f"alternating rounds, median shown; {report['filesystem']} on {report['machine']}.",
        "",
        "| workload | synchronous | msg/s | put p50 ms | put p99 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for workload in WORKLOADS:
        for mode in MODES:
            r = report["results"][workload][mode]
            lines.append(
                f"| {workload} | {mode} | {r['msg_per_s']:.0f} | {r['put_p50_ms']:.2f} | {r['put_p99_ms']:.2f} |"
            )
    for workload in WORKLOADS:
        ratio = (
            report["results"][workload]["normal"]["msg_per_s"]
            / report["results"][workload]["full"]["msg_per_s"]
        )
        lines.append(f"\n`full` is {ratio:.1f}x slower than `normal` for {workload}.")
    lines.append(
        "\nA device sends about one event per utterance and one telemetry report per interval: a few "
        "messages a second at most, far below either figure."
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument(
        "--dir",
        type=Path,
        default=REPO / "benchmarks" / "work",
        help="where the databases go (the disk to measure)",
    )
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    samples: dict = {w: {m: [] for m in MODES} for w in WORKLOADS}
    with tempfile.TemporaryDirectory(prefix="outbox-sync-", dir=args.dir) as tmp:
        folder = Path(tmp)
        for _ in range(args.rounds):
            for workload in WORKLOADS:
                for mode in MODES:
                    samples[workload][mode].append(one_round(folder, mode, workload, args.messages))
        fs = filesystem(folder)
    results = {
        w: {m: {k: statistics.median(r[k] for r in samples[w][m]) for k in samples[w][m][0]} for m in MODES}
        for w in WORKLOADS
    }
    report = {
        "messages": args.messages,
        "payload_bytes": len(PAYLOAD),
        "rounds": args.rounds,
        "filesystem": fs,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "results": results,
        "rounds_raw": samples,
    }
    write_report(args.out, "outbox_sync", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
