"""``edgewise cloud ingest`` and ``edgewise cloud fleet``.

::

    edgewise cloud ingest --host broker --port 8883 --tls-ca ca.pem --username ingest1 \\
        --password-file ingest1.pw --broker-dir fleet-broker/ --store postgresql://fleet@db/fleet
    edgewise cloud fleet --store fleet.sqlite                 # the device table in the terminal
    edgewise cloud fleet --store fleet.sqlite --serve 127.0.0.1:8090   # the page alone

"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from typing import Any

from edgewise.errors import ConfigError

log = logging.getLogger(__name__)

_CLI_FIELDS = {  # argparse dest -> IngestConfig field
    "store": "store",
    "host": "host",
    "port": "port",
    "username": "username",
    "password_file": "password_file",
    "client_id": "client_id",
    "group": "group",
    "fleet": "fleet",
    "devices": "devices_file",
    "broker_dir": "broker_dir",
    "max_bytes": "max_bytes",
    "batch": "batch_max",
    "session_expiry": "session_expiry_s",
    "receive_maximum": "receive_maximum",
}


def ingest_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML with any IngestConfig field; flags override it")
    p.add_argument(
        "--store", metavar="URL", help="fleet.sqlite (default), sqlite:///PATH or postgresql://..."
    )
    p.add_argument("--host", help="MQTT broker host (default localhost)")
    p.add_argument("--port", type=int, help="MQTT broker port (default 1883)")
    p.add_argument("--username", help="the worker's operator login (one login per worker)")
    p.add_argument("--password-file", metavar="FILE", help="file holding the login's password")
    p.add_argument(
        "--client-id", help="MQTT client id, the name of the persistent session (default: username)"
    )
    p.add_argument(
        "--group", help="shared subscription group; workers in one group split the load (default ingest)"
    )
    p.add_argument("--fleet", help="one fleet id, or + for every fleet (default +)")
    p.add_argument("--tls-ca", metavar="FILE", help="CA certificate to verify the broker (turns TLS on)")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate (with --tls-key)")
    p.add_argument("--tls-key", metavar="FILE", help="client key")
    p.add_argument(
        "--tls-insecure", action="store_true", help="TLS without verifying the broker (testing only)"
    )
    p.add_argument("--devices", metavar="FILE", help="allowlist: FLEET/DEVICE lines; others are rejected")
    p.add_argument(
        "--broker-dir", metavar="DIR", help="allowlist: the FLEET.DEVICE users of a fleet's broker folder"
    )
    p.add_argument("--max-bytes", type=int, help="larger payloads are rejected unread (default 262144)")
    p.add_argument("--batch", type=int, help="messages per transaction at most (default 500)")
    p.add_argument(
        "--session-expiry",
        type=int,
        metavar="S",
        help="how long the broker keeps the session (default 7 days)",
    )
    p.add_argument(
        "--receive-maximum", type=int, help="unacknowledged messages the broker may send (default 1000)"
    )
    p.add_argument(
        "--no-status-snapshot", action="store_true", help="do not read the retained statuses at connect"
    )
    p.add_argument(
        "--leave",
        action="store_true",
        help="on stop, unsubscribe and end the session (a worker retired for good; the group's others take its share)",
    )


def build_ingest_config(args: argparse.Namespace) -> Any:
    from edgewise.cloud.fleet.ingest import IngestConfig

    data: dict[str, Any] = {}
    if args.config:
        from edgewise.config import read_yaml

        data.update(read_yaml(args.config))
    for dest, field in _CLI_FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            data[field] = value
    if args.tls_ca or args.tls_cert or args.tls_key or args.tls_insecure:
        tls = dict(data.get("tls") or {})
        for key, value in (("ca", args.tls_ca), ("cert", args.tls_cert), ("key", args.tls_key)):
            if value:
                tls[key] = value
        if args.tls_insecure:
            tls["insecure"] = True
        data["tls"] = tls
    if args.no_status_snapshot:
        data["status_snapshot"] = False
    return IngestConfig.load(data)


def ingest_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.fleet.ingest import IngestWorker

    config = build_ingest_config(args)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())  # the worker stops between batches
    worker = IngestWorker(config)
    started = time.monotonic()
    stats = worker.run(stop, leave=args.leave)
    seconds = time.monotonic() - started
    total = sum(stats[k] for k in ("stored", "duplicate", "ignored", "rejected"))
    print(
        f"ingest: stopped after {seconds:.1f} s: {total} messages, {stats['stored']} stored, "
        f"{stats['duplicate']} duplicates, {stats['ignored']} ignored, {stats['rejected']} rejected"
    )
    return 0


def fleet_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store", metavar="URL", default="fleet.sqlite", help="the ingest's store (default fleet.sqlite)"
    )
    p.add_argument("--json", action="store_true", help="print the devices as JSON")
    p.add_argument("--events", type=int, default=0, metavar="N", help="also print the newest N events")
    p.add_argument(
        "--stale-after",
        type=float,
        default=None,
        metavar="S",
        help="an online device not heard from for S seconds shows as stale (default 120)",
    )
    p.add_argument(
        "--serve", metavar="HOST:PORT", help="serve the fleet page and /metrics there instead (uvicorn)"
    )


def fleet_run(args: argparse.Namespace) -> int:
    from edgewise.cloud.fleet.store import open_store
    from edgewise.cloud.fleet.summary import DEFAULT_STALE_AFTER_S, device_rows, ingest_summary, text_table

    stale = args.stale_after if args.stale_after is not None else DEFAULT_STALE_AFTER_S
    if args.serve:
        return _serve(args.store, args.serve, stale)
    with open_store(args.store, create=False) as store:
        now = time.time()
        rows = device_rows(store, now=now, stale_after_s=stale)
        if args.json:
            out: dict[str, Any] = {"now": now, "devices": [r.as_dict() for r in rows]}
            if args.events:
                out["events"] = store.events(limit=args.events)
            out["ingest"] = ingest_summary(store)["totals"]
            print(json.dumps(out, indent=2))
            return 0
        print(text_table(rows, now=now))
        totals = ingest_summary(store)["totals"]
        print(
            f"\ningest: {totals.get('received', 0)} received, {totals.get('stored', 0)} stored, "
            f"{totals.get('duplicates', 0)} duplicates, {totals.get('rejected', 0)} rejected"
        )
        if args.events:
            print()
            for e in store.events(limit=args.events):
                what = e["label"] if e["type"] == "event" else f"{e['code']}: {e['message']}"
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["ts"]))
                print(f"{stamp}  {e['fleet']}/{e['device']}  {e['type']:5}  {what}")
    return 0


def _serve(store_url: str, where: str, stale_after_s: float) -> int:
    host, sep, port = where.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--serve {where!r}: expected HOST:PORT, e.g. 127.0.0.1:8090")
    if host not in ("", "127.0.0.1", "localhost", "::1", "[::1]"):
        # the page alone has no login and no TLS: beyond this machine it goes through
        # `edgewise cloud serve`, which mounts it behind its token and certificate
        raise ConfigError(
            f"--serve {where!r}: the page alone serves loopback only (127.0.0.1, localhost, ::1); to "
            "reach it from other machines serve it with `edgewise cloud serve` (TLS and a token)"
        )
    try:
        import uvicorn
    except ImportError:
        from edgewise.errors import MissingDependencyError

        raise MissingDependencyError(
            "the fleet page needs uvicorn and fastapi: pip install fastapi uvicorn"
        ) from None
    from edgewise.cloud.fleet.app import create_fleet_app

    app = create_fleet_app(store_url, stale_after_s=stale_after_s)
    print(f"fleet page on http://{host or '127.0.0.1'}:{port}/", flush=True)
    uvicorn.run(app, host=host or "127.0.0.1", port=int(port), log_level="warning")
    return 0
