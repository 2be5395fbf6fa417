"""Telemetry ingest: how fast from Mosquitto into SQLite and PostgreSQL, and what a restart loses.

Everything real and on this machine: Mosquitto 2.0.11 (the lossless test config), the ingest
worker as the CLI runs it (``edgewise cloud ingest``, one process per worker,
batches of 500, QoS 1, PUBACK after the commit), SQLite in WAL mode with ``synchronous=FULL`` and
a PostgreSQL server started here with ``fsync=on`` (both durable: acknowledged means on disk).
Messages are SER events of about 300 bytes from 5 devices.

* ``throughput``: 1 and 2 workers per store, two ways:
  ``drain``: the workers are paused (SIGSTOP) while N messages are queued at the broker, then
  resumed; messages per second until all are stored (the ingest's own capacity);
  ``live``: one publisher sends N as fast as it can while the workers ingest; first publish to
  last row stored (publisher, broker and workers share the machine's cores).
* ``ingest_restart``: a paced stream; the worker is killed (SIGKILL) a third of the way in and
  started again 1 s later; lost = sent - stored.
* ``broker_restart``: the broker (persistence on) is restarted mid-stream:
  ``backlog``: the worker is behind (paused) when the broker stops: what was queued for it
  survives the restart; ``devices``: 4 real device clients (TelemetryClient: outbox, reconnect
  from 1 s) keep producing through the restart; ``worker_back_late``: the worker is still away
  (paused) when 500 messages reach the restarted broker: Mosquitto 2.0.11 does not restore shared
  subscriptions, so they match no subscriber until the worker subscribes again (the broker says
  so: PUBACK 0x10, counted as ``unrouted``). Two publishers: a raw paho client that counts the
  PUBACK and moves on (those 500 are lost: what any plain MQTT publisher gets), and
  ``worker_back_late_devices``: 4 real device clients (TelemetryClient, outbox, the device
  defaults), which keep a message the broker had no subscriber for, hold its topic and try again
  from 1 s (doubling, up to 30 s) until the worker is back.

Writes ``OUT/cloud_ingest.{json,md}``::

    .venv/bin/python benchmarks/cloud_ingest.py --out benchmarks/results
    .venv/bin/python benchmarks/cloud_ingest.py --out /tmp/x --n 5000 --stores sqlite   # quicker

The lead's report can call :func:`measure` and use the dict it returns.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgewise.cloud.fleet.harness import AckCountingPublisher, IngestProcess, numbered_event  # noqa: E402
from edgewise.cloud.fleet.store import open_store  # noqa: E402
from edgewise.devtools.mosquitto import MosquittoBroker, find_tool  # noqa: E402

DEVICES = [f"dev{i}" for i in range(5)]


class Bench:
    """One broker and store for one measurement; everything cleaned up by close()."""

    def __init__(self, root: Path, store_kind: str, pg, *, persistence: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="run-", dir=root))
        self.broker = MosquittoBroker(workdir=self.root / "broker", persistence=persistence).start()
        if store_kind == "sqlite":
            self.url = f"sqlite:///{self.root / 'fleet.sqlite'}"
        else:
            self.url = pg.create_database(f"bench_{os.getpid()}_{int(time.time() * 1000) % 10**9}")
        self.store = open_store(self.url)
        self.workers: list[IngestProcess] = []
        self.publishers: list[AckCountingPublisher] = []

    def worker(self, name: str) -> IngestProcess:
        args = ["--host", self.broker.host, "--port", str(self.broker.port), "--store", self.url,
                "--client-id", name, "--batch", "500"]  # fmt: skip
        proc = IngestProcess(args, self.root / f"{name}.log")
        self.workers.append(proc)
        return proc

    def publisher(self, **kwargs) -> AckCountingPublisher:
        pub = AckCountingPublisher(self.broker.host, self.broker.port, **kwargs)
        self.publishers.append(pub)
        return pub

    def stored(self) -> int:
        rows = self.store.query("SELECT SUM(value) AS n FROM ingest_counters WHERE counter = 'stored'")
        return int(rows[0]["n"] or 0)

    def counter(self, name: str) -> int:
        rows = self.store.query("SELECT SUM(value) AS n FROM ingest_counters WHERE counter = ?", (name,))
        return int(rows[0]["n"] or 0)

    def per_worker(self) -> dict[str, int]:
        rows = self.store.query(
            "SELECT worker, SUM(value) AS n FROM ingest_counters WHERE counter = 'stored' GROUP BY worker"
        )
        return {r["worker"]: int(r["n"]) for r in rows}

    def distinct_events(self) -> int:
        return int(self.store.query("SELECT COUNT(DISTINCT key) AS n FROM events")[0]["n"])

    def wait_stored(self, n: int, timeout: float, poll: float = 0.05) -> float:
        deadline = time.monotonic() + timeout
        while True:
            if self.stored() >= n:
                return time.monotonic()
            if time.monotonic() > deadline:
                return float("nan")
            time.sleep(poll)

    def settle(self, quiet_s: float = 2.0, timeout: float = 60) -> None:
        """Wait until the stored count stops moving for ``quiet_s``."""
        last, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.stored()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.1)

    def close(self) -> None:
        for pub in self.publishers:
            pub.close()
        for w in self.workers:
            w.close()
        self.store.close()
        self.broker.close()
        shutil.rmtree(self.root, ignore_errors=True)


def publish(
    pub: AckCountingPublisher, n: int, *, start: int = 0, pace_every: int = 0, pace_s: float = 0.0
) -> None:
    for i in range(start, start + n):
        pub.publish(f"edgewise/lab/{DEVICES[i % len(DEVICES)]}/events", numbered_event(i))
        if pace_every and (i + 1) % pace_every == 0:
            time.sleep(pace_s)


# --------------------------------------------------------------------------------------------------


def throughput(root: Path, kind: str, pg, workers: int, n: int, mode: str) -> dict:
    bench = Bench(root, kind, pg)
    try:
        procs = [bench.worker(f"w{i + 1}") for i in range(workers)]
        for p in procs:
            p.wait_subscribed()
        pub = bench.publisher()
        if mode == "drain":
            for p in procs:
                p.signal(signal.SIGSTOP)
            t0 = time.monotonic()
            publish(pub, n)
            pub.wait_all_acked(300)
            publish_s = time.monotonic() - t0
            start = time.monotonic()
            for p in procs:
                p.signal(signal.SIGCONT)
        else:
            start = time.monotonic()
            publish(pub, n)
            pub.wait_all_acked(300)
            publish_s = time.monotonic() - start
        end = bench.wait_stored(n, timeout=600)
        seconds = end - start
        return {
            "store": kind,
            "workers": workers,
            "mode": mode,
            "messages": n,
            "seconds": round(seconds, 3),
            "msg_per_s": round(n / seconds, 1),
            "publish_msg_per_s": round(n / publish_s, 1),
            "stored_per_worker": bench.per_worker(),
            "duplicates": bench.counter("duplicates"),
            "lost": n - bench.distinct_events(),
        }
    finally:
        bench.close()


def ingest_restart(root: Path, kind: str, pg, n: int) -> dict:
    bench = Bench(root, kind, pg)
    try:
        first = bench.worker("w1")
        first.wait_subscribed()
        pub = bench.publisher()
        sender = threading.Thread(target=publish, args=(pub, n), kwargs={"pace_every": 100, "pace_s": 0.02})
        sender.start()
        bench.wait_stored(n // 3, timeout=120, poll=0.01)
        first.kill9()
        at_kill = bench.stored()
        time.sleep(1.0)
        bench.worker("w1").wait_subscribed()
        sender.join()
        pub.wait_all_acked(300)
        bench.wait_stored(n, timeout=300)
        bench.settle()
        return {
            "store": kind,
            "messages": n,
            "stored_at_kill": at_kill,
            "lost": n - bench.distinct_events(),
            "duplicates": bench.counter("duplicates"),
        }
    finally:
        bench.close()


def broker_restart_backlog(root: Path, kind: str, pg, n: int) -> dict:
    bench = Bench(root, kind, pg, persistence=True)
    try:
        worker = bench.worker("w1")
        worker.wait_subscribed()
        pub = bench.publisher()
        publish(pub, n // 10)
        bench.wait_stored(n // 10, timeout=120)
        worker.signal(signal.SIGSTOP)
        publish(pub, n // 2 - n // 10, start=n // 10)
        pub.wait_all_acked(300)
        queued = n // 2 - bench.stored()
        bench.broker.restart()
        worker.signal(signal.SIGCONT)
        worker.wait_subscribed(count=2)
        publish(pub, n - n // 2, start=n // 2)
        pub.wait_all_acked(300)
        bench.wait_stored(n, timeout=300)
        bench.settle()
        return {
            "store": kind,
            "variant": "backlog",
            "messages": n,
            "queued_at_restart": queued,
            "lost": n - bench.distinct_events(),
            "duplicates": bench.counter("duplicates"),
            "unrouted": pub.unrouted,
        }
    finally:
        bench.close()


def broker_restart_worker_late(root: Path, kind: str, pg, n: int, gap: int = 500) -> dict:
    """The worker is still away (paused) when the restarted broker takes ``gap`` messages: on
    2.0.11 its shared subscription is gone until it subscribes again, so those match nobody."""
    bench = Bench(root, kind, pg, persistence=True)
    try:
        worker = bench.worker("w1")
        worker.wait_subscribed()
        pub = bench.publisher()
        publish(pub, n // 2)
        pub.wait_all_acked(300)
        bench.wait_stored(n // 2, timeout=300)
        worker.signal(signal.SIGSTOP)
        bench.broker.restart()
        time.sleep(0.5)  # the publisher is back; the worker is not
        publish(pub, gap, start=n // 2)
        pub.wait_all_acked(60)
        unrouted = pub.unrouted
        worker.signal(signal.SIGCONT)
        worker.wait_subscribed(count=2)
        publish(pub, n - n // 2 - gap, start=n // 2 + gap)
        pub.wait_all_acked(300)
        bench.settle()
        return {
            "store": kind,
            "variant": "worker_back_late",
            "messages": n,
            "published_in_gap": gap,
            "lost": n - bench.distinct_events(),
            "unrouted": unrouted,
            "duplicates": bench.counter("duplicates"),
        }
    finally:
        bench.close()


def _device_clients(bench: Bench, devices: int, prefix: str) -> list:
    """``devices`` real device clients (TelemetryClient with its outbox; the device defaults:
    reconnect from 1 s, no-subscriber retry from 1 s), connected."""
    from edgewise.edge.telemetry.client import TelemetryClient

    clients = []
    for d in range(devices):
        config = {
            "host": bench.broker.host,
            "port": bench.broker.port,
            "fleet": "lab",
            "device": f"{prefix}{d}",
            "outbox_path": str(bench.root / f"outbox-{prefix}{d}.sqlite"),
            "outbox_sync": "normal",
        }
        client = TelemetryClient(config, model={"name": "ser-tiny", "version": "1.0.0"})
        client.start()
        clients.append(client)
        if not client.wait_connected(10):
            raise RuntimeError("device client did not connect")
    return clients


def _start_producing(clients: list, per_device: int, pause_s: float = 0.005) -> list[threading.Thread]:
    """A thread per client publishing ``per_device`` events, started (join them to wait)."""

    def run(client) -> None:  # noqa: ANN001
        for i in range(per_device):
            client.publish_event(label=str(i % 4), latency_ms=2.0)
            time.sleep(pause_s)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    return threads


def _produce(clients: list, per_device: int, pause_s: float = 0.005) -> None:
    for t in _start_producing(clients, per_device, pause_s):
        t.join()


def broker_restart_worker_late_devices(
    root: Path, kind: str, pg, per_device: int, gap_per_device: int = 125, devices: int = 4
) -> dict:
    """:func:`broker_restart_worker_late` with the devices' own client instead of raw paho: the
    ``gap`` published while the worker is still away meets PUBACK 0x10; the client keeps those
    messages in its outbox, holds the topic and probes from 1 s until the worker has subscribed
    again. ``per_device`` before the restart and again after the worker is back."""
    bench = Bench(root, kind, pg, persistence=True)
    clients: list = []
    try:
        worker = bench.worker("w1")
        worker.wait_subscribed()
        clients = _device_clients(bench, devices, "late")
        _produce(clients, per_device)
        bench.wait_stored(per_device * devices, timeout=120)
        worker.signal(signal.SIGSTOP)
        bench.broker.restart()
        _produce(clients, gap_per_device)  # into the outboxes; sent once each client is back
        deadline = time.monotonic() + 60
        while not all(any(t.endswith("/events") for t in c.held_topics) for c in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the device clients never met 'no matching subscribers'")
            time.sleep(0.05)
        held = sum(any(t.endswith("/events") for t in c.held_topics) for c in clients)
        time.sleep(2.0)  # the worker stays away a while: the clients probe and are refused again
        still_held = sum(any(t.endswith("/events") for t in c.held_topics) for c in clients)
        worker.signal(signal.SIGCONT)
        back = time.monotonic()
        worker.wait_subscribed(count=2)
        _produce(clients, per_device)
        total = (2 * per_device + gap_per_device) * devices
        done = bench.wait_stored(total, timeout=120)
        bench.settle()
        # (not flush(): it returns at once while a topic is still held, by design)
        emptied = all(c.outbox.depth() == 0 for c in clients)
        return {
            "store": kind,
            "variant": "worker_back_late_devices",
            "messages": total,
            "devices": devices,
            "published_in_gap": gap_per_device * devices,
            "clients_holding_events": held,
            "still_holding_after_2s": still_held,
            "outboxes_empty": emptied,
            "seconds_worker_back_to_all_stored": round(done - back, 2),
            "lost": total - bench.distinct_events(),
            "duplicates": bench.counter("duplicates"),
        }
    finally:
        for c in clients:
            c.close(flush_timeout=0)
        bench.close()


def broker_restart_devices(root: Path, kind: str, pg, per_device: int, devices: int = 4) -> dict:
    bench = Bench(root, kind, pg, persistence=True)
    clients: list = []
    try:
        bench.worker("w1").wait_subscribed()
        clients = _device_clients(bench, devices, "real")
        threads = _start_producing(clients, per_device)
        total = per_device * devices
        bench.wait_stored(total // 3, timeout=120)
        bench.broker.restart()
        for t in threads:
            t.join()
        flushed = all(c.flush(120) for c in clients)
        bench.wait_stored(total, timeout=120)
        bench.settle()
        return {
            "store": kind,
            "variant": "devices",
            "messages": total,
            "devices": devices,
            "outboxes_flushed": flushed,
            "lost": total - bench.distinct_events(),
            "duplicates": bench.counter("duplicates"),
        }
    finally:
        for c in clients:
            c.close(flush_timeout=0)
        bench.close()


# --------------------------------------------------------------------------------------------------


def versions() -> dict:
    out = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    with contextlib.suppress(Exception):  # informative only
        out["mosquitto"] = subprocess.run(
            [find_tool("mosquitto"), "-h"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[0]
    for module in ("paho.mqtt", "psycopg"):
        try:
            mod = __import__(module, fromlist=["__version__"])
            out[module] = mod.__version__
        except Exception:  # noqa: BLE001
            pass
    return out


def measure(
    n: int = 20_000, stores: tuple[str, ...] = ("sqlite", "postgresql"), work: Path | None = None
) -> dict:
    """Run every measurement; returns the report as a dict (see the module docstring)."""
    root = Path(tempfile.mkdtemp(prefix="edgewise-ingest-bench-", dir=work))
    pg = None
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": os.getloadavg()},
        "versions": versions(),
        "settings": {"batch_max": 500, "sqlite_synchronous": "FULL", "postgresql_fsync": "on", "payload_bytes": len(numbered_event(0))},
        "throughput": [],
        "ingest_restart": [],
        "broker_restart": [],
    }  # fmt: skip
    try:
        if "postgresql" in stores:
            from edgewise.devtools.postgres import PostgresServer

            pg = PostgresServer(fsync=True).start()
            report["versions"]["postgresql"] = subprocess.run(
                [pg.pg_ctl, "--version"], capture_output=True, text=True
            ).stdout.strip()
        for kind in stores:
            for workers in (1, 2):
                for mode in ("drain", "live"):
                    row = throughput(root, kind, pg, workers, n, mode)
                    print(
                        f"{kind:10} {workers} worker(s) {mode:5}: {row['msg_per_s']:8.0f} msg/s", flush=True
                    )
                    report["throughput"].append(row)
            report["ingest_restart"].append(ingest_restart(root, kind, pg, n // 2))
            print(f"{kind:10} ingest kill -9: {report['ingest_restart'][-1]}", flush=True)
            for fn in (broker_restart_backlog, broker_restart_worker_late):
                report["broker_restart"].append(fn(root, kind, pg, n // 2))
                print(f"{kind:10} broker restart: {report['broker_restart'][-1]}", flush=True)
            late = broker_restart_worker_late_devices(root, kind, pg, per_device=max(50, n // 40))
            report["broker_restart"].append(late)
            print(f"{kind:10} broker restart: {late}", flush=True)
            report["broker_restart"].append(broker_restart_devices(root, kind, pg, per_device=300))
            print(f"{kind:10} broker restart: {report['broker_restart'][-1]}", flush=True)
    finally:
        if pg is not None:
            pg.close()
        shutil.rmtree(root, ignore_errors=True)
    report["machine"]["loadavg_after"] = os.getloadavg()
    return report


def markdown(report: dict) -> str:
    m = report["machine"]
    pg = f"{report['versions']['postgresql']}, " if "postgresql" in report["versions"] else ""
    lines = [
        "# Telemetry ingest: Mosquitto -> SQLite / PostgreSQL",
        "",
        f"{m['cpus']} CPUs, load average {m['loadavg_before'][0]:.1f} before, {m['loadavg_after'][0]:.1f} after; "
        f"{report['versions'].get('mosquitto', 'mosquitto ?')}, {pg}"
        f"SQLite {report['versions']['sqlite']} (WAL, synchronous=FULL), PostgreSQL fsync=on; batches of 500; "
        f"events of {report['settings']['payload_bytes']} bytes.",
        "",
        "## Throughput (messages per second, stored and acknowledged)",
        "",
        "| store | workers | mode | msg/s | seconds | per worker | duplicates | lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["throughput"]:
        per = ", ".join(f"{k} {v}" for k, v in sorted(r["stored_per_worker"].items()))
        lines.append(
            f"| {r['store']} | {r['workers']} | {r['mode']} | {r['msg_per_s']:.0f} | {r['seconds']:.2f} | {per} | "
            f"{r['duplicates']} | {r['lost']} |"
        )
    lines += [
        "",
        "`drain`: the backlog of N queued at the broker, workers resumed; `live`: one publisher sending while the "
        "workers ingest (its own rate in the JSON as publish_msg_per_s).",
        "",
        "## Restarts",
        "",
        "| what | store | messages | lost | duplicates | notes |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["ingest_restart"]:
        lines.append(
            f"| ingest kill -9 + restart | {r['store']} | {r['messages']} | {r['lost']} | {r['duplicates']} | "
            f"killed with {r['stored_at_kill']} stored |"
        )
    for r in report["broker_restart"]:
        note = {
            "backlog": f"{r.get('queued_at_restart')} queued for the worker at the restart",
            "devices": f"{r.get('devices')} device clients (outbox, reconnect from 1 s)",
            "worker_back_late": f"raw paho publisher: {r.get('published_in_gap')} published before the worker "
            f"was back; {r.get('unrouted')} PUBACKs said 'no matching subscribers' and the publisher moved on",
            "worker_back_late_devices": f"{r.get('devices')} device clients (TelemetryClient): "
            f"{r.get('published_in_gap')} produced after the restart, before the worker was back; "
            f"{r.get('clients_holding_events')} of {r.get('devices')} held their events topic on PUBACK 0x10 "
            f"and retried; all stored {r.get('seconds_worker_back_to_all_stored')} s after the worker was resumed",
        }[r["variant"]]
        lines.append(
            f"| broker restart ({r['variant']}) | {r['store']} | {r['messages']} | {r['lost']} | {r['duplicates']} | {note} |"
        )
    lines += [
        "",
        "Mosquitto 2.0.11 restores a persistent session's queued messages after a restart but not its shared "
        "subscription: until the ingest worker subscribes again, what is published matches no subscriber. The worker "
        "reconnects from 0.1 s; device clients back off from 1 s, so they come back after it (`devices`). What "
        "reaches the broker before the worker is back matches no subscriber, and the broker says so (PUBACK 0x10): a "
        "plain publisher that takes the PUBACK as delivered loses it (`worker_back_late`, raw paho); the device's "
        "TelemetryClient keeps it in its outbox and retries until the worker is back (`worker_back_late_devices`).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--n", type=int, default=20_000, help="messages per throughput run (restarts use n/2)"
    )
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument(
        "--work", type=Path, default=None, help="where the brokers and SQLite files go (default: temp)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report_files import write_report

    report = measure(args.n, tuple(s.strip() for s in args.stores.split(",") if s.strip()), args.work)
    write_report(args.out, "cloud_ingest", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
