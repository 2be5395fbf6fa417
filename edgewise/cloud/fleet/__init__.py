"""The fleet's side of telemetry: ingest what devices publish, keep it, show it.

One job a module (none imports torch; the web app's imports are lazy):

* :mod:`.store`: the :class:`~.store.FleetStore` interface and its two implementations, SQLite (a
  file, WAL; the default) and PostgreSQL (``postgresql://...``, psycopg 3): devices, status,
  telemetry, events, command acks, rejected payloads, ingest counters and ``device_models``;
* :mod:`.classify`: one MQTT message in, one decision out (store it, ignore it, or reject it with
  a reason), before anything touches the store;
* :mod:`.allowlist`: the devices a fleet knows (a list file or the broker's password file);
* :mod:`.ingest`: the ``edgewise cloud ingest`` worker (MQTT 5 shared subscription, persistent
  session, QoS 1, PUBACK only after the commit);
* :mod:`.summary`: what the page, the JSON endpoints, ``/metrics`` and ``edgewise cloud fleet``
  show, computed once from the store;
* :mod:`.charts`: server-side SVG charts; :mod:`.metrics`: the Prometheus text format;
* :mod:`.app`: the fleet page and its JSON endpoints (``create_fleet_app(store)``, ``fleet_router``);
* :mod:`.commands`: ``edgewise cloud ingest`` and ``edgewise cloud fleet``;
* :mod:`.harness`: a publisher that counts PUBACKs and an ingest worker process, for tests and
  benchmarks (a throwaway PostgreSQL server for them: :mod:`edgewise.devtools.postgres`).
"""
