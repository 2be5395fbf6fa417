"""A stand-in for the device daemon (edgewise/edge/daemon.py), for the deploy tests only.

It follows just the daemon's deploy contract and nothing else (no audio, no MQTT): it writes its
pid to ROOT/daemon.pid; at start and on every SIGHUP it "loads" what ROOT/current names and writes
ROOT/health.json atomically ({"pid", "ok", "model", "ts", "error"}), calling mark_good on success.
``--fail KEY`` makes loading KEY fail (ok=false); ``--silent KEY`` gives no report for KEY (a hang).
The file name contains "edgewise" because edge-deploy only signals a pid whose command line does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from edgewise.edge.install import current_install, mark_good


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--fail", action="append", default=[])
    parser.add_argument("--silent", action="append", default=[])
    args = parser.parse_args()
    root = args.root

    def load(reason: str) -> None:
        target = current_install(root)
        key = f"{target.parent.name}/{target.name}" if target else None
        if key in args.silent:
            return
        ok = key is not None and key not in args.fail
        error = None if ok else f"stand-in: {key} refuses to load ({reason})"
        report = {"pid": os.getpid(), "ok": ok, "model": key, "ts": time.time(), "error": error}
        tmp = root / f".health.json.{os.getpid()}"
        tmp.write_text(json.dumps(report) + "\n")
        os.replace(tmp, root / "health.json")
        if ok:
            mark_good(root, key)

    signal.signal(signal.SIGHUP, lambda signum, frame: load("SIGHUP"))
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    load("start")
    (root / "daemon.pid").write_text(f"{os.getpid()}\n")
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
