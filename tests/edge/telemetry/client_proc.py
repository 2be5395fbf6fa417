"""A device process for the tests: a TelemetryClient that publishes, then waits for a signal.

Usage: ``python client_proc.py SPEC.json`` where SPEC holds ``config`` (a TelemetryConfig mapping),
``events`` (how many events to publish, labelled "0", "1", ...) and ``wait_connected``. Prints
``READY`` once the events are stored; on SIGTERM it closes the client (flush, offline status) and
exits 0 if the outbox was flushed, 3 if not.
"""

import json
import signal
import sys
import threading

from edgewise.edge.telemetry.client import TelemetryClient


def main() -> None:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    client = TelemetryClient(spec["config"], model={"name": "ser-tiny", "version": "1.0.0"})
    client.start()
    if spec.get("wait_connected") and not client.wait_connected(15):
        print("NOT CONNECTED", flush=True)
        sys.exit(2)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())  # close() runs below, not in the handler
    for i in range(spec.get("events", 0)):
        client.publish_event(label=str(i), latency_ms=1.0)
    print("READY", flush=True)
    stop.wait()
    sys.exit(0 if client.close(flush_timeout=10) else 3)


if __name__ == "__main__":
    main()
