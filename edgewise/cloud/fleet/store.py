"""Where the fleet's telemetry is kept: one interface, SQLite (the default) and PostgreSQL.

::

    store = open_store("fleet.sqlite")                          # or sqlite:///abs/path.sqlite
    store = open_store("postgresql://user@db.example/fleet")    # psycopg 3
    outcomes = store.write(decisions, worker="ingest-1")        # one transaction
    store.devices(); store.telemetry_series("lab", "dev1"); store.counters()

Tables (the same columns in both databases; times are Unix epoch seconds as floats, ``ts`` the
device's clock, ``received_at`` the ingest worker's)::

    devices            fleet, device, first_seen, last_seen, state, state_reason, state_ts,
                       state_received, model_name, model_version, edgewise_version, uptime_s,
                       telemetry_ts (the ts of its newest telemetry report)
    status             every status payload (retained ones too), unique (fleet, device, key)
    telemetry          one row a report, the latency percentiles and figures as columns
    events             ``event`` and ``error`` payloads, unique (fleet, device, key = payload id)
    command_acks       unique (fleet, device, key = the command id)
    rejected_payloads  the latest ``keep_rejected`` refusals: topic, reason, detail, size, first 1 KiB
    ingest_counters    worker, counter (received, stored, duplicates, ignored, rejected), label
                       (the topic kind, or the reason for ``rejected``), value
    device_models      fleet, device, task, model_name, model_version, since, updated_ts: what
                       each device runs, for the model registry

Every payload row also keeps the payload itself (``payload``, the JSON text as the device sent it) and the worker that
stored it. :meth:`FleetStore.write` stores a batch of decisions in one transaction: payload rows,
the devices' state, ``device_models`` and the counters commit together or not at all, so the
counters always add up (``received = stored + duplicates + ignored + rejected``) and an ingest
worker acknowledges a message to the broker only once everything it caused is committed. A
payload the database refuses (it should never happen after :mod:`.classify`) is retried alone and
stored as rejected (``unstorable``) instead of taking its batch down with it.

Which status counts: the one received last (the broker's order), not the one with the latest
``ts``: a device's last will carries the ``ts`` of the connection it belongs to, older than the
``online`` it replaces. ``device_models`` goes by ``ts`` instead, so a backlog of old events that a
device delivers after it reconnects does not move it back to the model it ran before.

SQLite runs in WAL mode with ``synchronous=FULL`` by default (a commit survives a power cut:
acknowledged means stored); ``sqlite:///path?synchronous=normal`` trades that for speed. Several
processes may write the same file (each write takes the lock up front, ``BEGIN IMMEDIATE``; a
writer waits up to 30 s). PostgreSQL creates its tables under an advisory lock, so workers that
start together do not race.
"""

from __future__ import annotations

import abc
import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgewise.cloud.fleet.classify import Decision
from edgewise.edge.telemetry.schema import CommandAck, ErrorEvent, Event, Status, Telemetry
from edgewise.errors import ConfigError, EdgewiseError, MissingDependencyError

SCHEMA_VERSION = 1
HEAD_BYTES = 1024  # of a rejected payload kept for inspection
DEFAULT_KEEP_REJECTED = 10_000
COUNTERS = ("received", "stored", "duplicates", "ignored", "rejected")
_PRUNE_EVERY = 256  # rejections between two prunes of rejected_payloads
_PG_LOCK = 0x65646777  # advisory lock id for creating the tables ("edgw")


class StoreError(EdgewiseError):
    """The store cannot be opened or used (bad URL, missing file, database unreachable)."""


class TransientStoreError(StoreError):
    """The database is away or busy right now; the same write may succeed later."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: str
    extra: tuple[str, ...] = ()


def _tables(id_col: str, blob: str) -> list[TableSpec]:
    payload = "payload TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL, worker TEXT NOT NULL"
    return [
        TableSpec("schema_info", "version INTEGER NOT NULL"),
        TableSpec(
            "devices",
            "fleet TEXT NOT NULL, device TEXT NOT NULL, first_seen DOUBLE PRECISION NOT NULL, "
            "last_seen DOUBLE PRECISION NOT NULL, state TEXT, state_reason TEXT, state_ts DOUBLE PRECISION, "
            "state_received DOUBLE PRECISION, model_name TEXT, model_version TEXT, edgewise_version TEXT, "
            "uptime_s DOUBLE PRECISION, telemetry_ts DOUBLE PRECISION, PRIMARY KEY (fleet, device)",
        ),
        TableSpec(
            "status",
            f"id {id_col}, fleet TEXT NOT NULL, device TEXT NOT NULL, key TEXT NOT NULL, "
            "ts DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, reason TEXT, model_name TEXT, "
            "model_version TEXT, edgewise_version TEXT, uptime_s DOUBLE PRECISION, retained BOOLEAN NOT NULL, "
            f"{payload}, UNIQUE (fleet, device, key)",
        ),
        TableSpec(
            "telemetry",
            f"id {id_col}, fleet TEXT NOT NULL, device TEXT NOT NULL, key TEXT NOT NULL, "
            "ts DOUBLE PRECISION NOT NULL, interval_s DOUBLE PRECISION NOT NULL, inferences BIGINT NOT NULL, "
            "inference_errors BIGINT NOT NULL, latency_p50_ms DOUBLE PRECISION, latency_p90_ms DOUBLE PRECISION, "
            "latency_p99_ms DOUBLE PRECISION, cpu_percent DOUBLE PRECISION, rss_mb DOUBLE PRECISION, "
            "temperature_c DOUBLE PRECISION, outbox_depth BIGINT NOT NULL, "
            f"{payload}, UNIQUE (fleet, device, key)",
            ("CREATE INDEX IF NOT EXISTS telemetry_device_ts ON telemetry (fleet, device, ts)",),
        ),
        TableSpec(
            "events",
            f"id {id_col}, fleet TEXT NOT NULL, device TEXT NOT NULL, key TEXT NOT NULL, type TEXT NOT NULL, "
            "ts DOUBLE PRECISION NOT NULL, task TEXT, code TEXT, message TEXT, model_name TEXT, "
            "model_version TEXT, label TEXT, latency_ms DOUBLE PRECISION, "
            f"{payload}, UNIQUE (fleet, device, key)",
            (
                "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
                "CREATE INDEX IF NOT EXISTS events_device_ts ON events (fleet, device, ts)",
            ),
        ),
        TableSpec(
            "command_acks",
            f"id {id_col}, fleet TEXT NOT NULL, device TEXT NOT NULL, key TEXT NOT NULL, command_id TEXT, "
            "action TEXT, ok BOOLEAN NOT NULL, error TEXT, ts DOUBLE PRECISION NOT NULL, "
            f"{payload}, UNIQUE (fleet, device, key)",
        ),
        TableSpec(
            "rejected_payloads",
            f"id {id_col}, received_at DOUBLE PRECISION NOT NULL, worker TEXT NOT NULL, topic TEXT NOT NULL, "
            f"reason TEXT NOT NULL, detail TEXT, size BIGINT NOT NULL, head {blob} NOT NULL",
        ),
        TableSpec(
            "ingest_counters",
            "worker TEXT NOT NULL, counter TEXT NOT NULL, label TEXT NOT NULL, value BIGINT NOT NULL, "
            "PRIMARY KEY (worker, counter, label)",
        ),
        TableSpec(
            "device_models",
            "fleet TEXT NOT NULL, device TEXT NOT NULL, task TEXT NOT NULL, model_name TEXT NOT NULL, "
            "model_version TEXT NOT NULL, since DOUBLE PRECISION NOT NULL, updated_ts DOUBLE PRECISION NOT NULL, "
            "PRIMARY KEY (fleet, device, task)",
        ),
    ]


PAYLOAD_COLUMNS = {
    "status": ("fleet", "device", "key", "ts", "state", "reason", "model_name", "model_version",
               "edgewise_version", "uptime_s", "retained", "payload", "received_at", "worker"),
    "telemetry": ("fleet", "device", "key", "ts", "interval_s", "inferences", "inference_errors",
                  "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "cpu_percent", "rss_mb",
                  "temperature_c", "outbox_depth", "payload", "received_at", "worker"),
    "events": ("fleet", "device", "key", "type", "ts", "task", "code", "message", "model_name",
               "model_version", "label", "latency_ms", "payload", "received_at", "worker"),
    "command_acks": ("fleet", "device", "key", "command_id", "action", "ok", "error", "ts", "payload",
                     "received_at", "worker"),
}  # fmt: skip
REJECTED_COLUMNS = ("received_at", "worker", "topic", "reason", "detail", "size", "head")
DEVICE_STATE_COLUMNS = (
    "state", "state_reason", "state_ts", "state_received", "model_name", "model_version", "edgewise_version", "uptime_s",
)  # fmt: skip


def _payload_row(d: Decision, worker: str) -> tuple[str, tuple]:
    """The table a stored payload goes to and its row, in :data:`PAYLOAD_COLUMNS` order."""
    p, msg = d.payload, d.message
    head = (d.fleet, d.device, d.key)
    tail = (msg.payload.decode("utf-8"), msg.received_at, worker)  # as the device sent it (valid UTF-8 JSON)
    model = getattr(p, "model", None)
    name, version = (model.name, model.version) if model is not None else (None, None)
    if isinstance(p, Status):
        return "status", (*head, p.ts, p.state, p.reason, name, version, p.edgewise_version, p.uptime_s,
                          bool(msg.retained), *tail)  # fmt: skip
    if isinstance(p, Telemetry):
        lat = p.latency_ms
        return "telemetry", (*head, p.ts, p.interval_s, p.inferences, p.inference_errors,
                             lat.p50 if lat else None, lat.p90 if lat else None, lat.p99 if lat else None,
                             p.cpu_percent, p.rss_mb, p.temperature_c, p.outbox_depth, *tail)  # fmt: skip
    if isinstance(p, Event):
        return "events", (
            *head,
            p.type,
            p.ts,
            p.task,
            None,
            None,
            name,
            version,
            p.label,
            p.latency_ms,
            *tail,
        )
    if isinstance(p, ErrorEvent):
        return "events", (*head, p.type, p.ts, None, p.code, p.message, name, version, None, None, *tail)
    if isinstance(p, CommandAck):
        return "command_acks", (*head, p.id, p.action, bool(p.ok), p.error, p.ts, *tail)
    raise TypeError(f"cannot store {type(p).__name__}")  # pragma: no cover - classify lets four kinds through


# ------------------------------------------------------------------------------------------------
# The interface


class FleetStore(abc.ABC):
    """What the ingest worker writes and the fleet page, ``/metrics`` and the registry read."""

    kind: str  # "sqlite" or "postgresql"
    url: str  # as given, with any password hidden

    @abc.abstractmethod
    def write(self, decisions: Sequence[Decision], *, worker: str) -> list[str]:
        """Store a batch in one transaction; per decision ``"stored"``, ``"duplicate"``,
        ``"ignored"`` or ``"rejected"``. Raises TransientStoreError when the database is away or
        busy (nothing was stored: retry the batch)."""

    @abc.abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query, as dicts; ``?`` placeholders in both databases."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- reads shared by every implementation ------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM devices ORDER BY fleet, device")

    def latest_telemetry(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The newest telemetry report of each device."""
        rows = self.query(  # devices.telemetry_ts names it: no scan of the whole table
            "SELECT t.* FROM devices d JOIN telemetry t ON t.fleet = d.fleet AND t.device = d.device "
            "AND t.ts = d.telemetry_ts"
        )
        return {(r["fleet"], r["device"]): r for r in rows}

    def telemetry_series(
        self, fleet: str, device: str, *, since: float | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """A device's telemetry reports, oldest first: the newest ``limit`` since ``since``."""
        rows = self.query(
            "SELECT ts, interval_s, inferences, inference_errors, latency_p50_ms, latency_p90_ms, "
            "latency_p99_ms, cpu_percent, rss_mb, temperature_c, outbox_depth FROM telemetry "
            "WHERE fleet = ? AND device = ? AND ts >= ? ORDER BY ts DESC LIMIT ?",
            (fleet, device, since if since is not None else float("-inf"), int(limit)),
        )
        return rows[::-1]

    def events(
        self, *, limit: int = 50, fleet: str | None = None, device: str | None = None, type: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest events and errors (by ``ts``), newest first."""
        where, params = _filters(fleet=fleet, device=device, type=type)
        rows = self.query(
            "SELECT fleet, device, key AS id, type, ts, task, code, message, model_name, model_version, "
            f"label, latency_ms, received_at FROM events{where} ORDER BY ts DESC LIMIT ?",
            (*params, int(limit)),
        )
        return rows

    def event_latencies(self, fleet: str, device: str, *, limit: int = 1000) -> list[float]:
        rows = self.query(
            "SELECT latency_ms FROM events WHERE fleet = ? AND device = ? AND latency_ms IS NOT NULL "
            "ORDER BY ts DESC LIMIT ?",
            (fleet, device, int(limit)),
        )
        return [r["latency_ms"] for r in rows]

    def command_acks(self, *, limit: int = 50, fleet: str | None = None, device: str | None = None):
        where, params = _filters(fleet=fleet, device=device)
        rows = self.query(
            "SELECT fleet, device, command_id, action, ok, error, ts, received_at FROM command_acks"
            f"{where} ORDER BY ts DESC LIMIT ?",
            (*params, int(limit)),
        )
        for row in rows:
            row["ok"] = bool(row["ok"])
        return rows

    def device_models(self) -> list[dict[str, Any]]:
        return self.query(
            "SELECT fleet, device, task, model_name, model_version, since FROM device_models "
            "ORDER BY fleet, device, task"
        )

    def counters(self) -> list[dict[str, Any]]:
        """``{"worker", "counter", "label", "value"}`` rows."""
        return self.query(
            "SELECT worker, counter, label, value FROM ingest_counters ORDER BY worker, counter, label"
        )

    def counter_totals(self) -> dict[str, dict[str, int]]:
        """``{counter: {label: value}}`` summed over the workers."""
        totals: dict[str, dict[str, int]] = {c: {} for c in COUNTERS}
        for row in self.counters():
            by_label = totals.setdefault(row["counter"], {})
            by_label[row["label"]] = by_label.get(row["label"], 0) + int(row["value"])
        return totals

    def rejected(self, *, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT received_at, worker, topic, reason, detail, size, head FROM rejected_payloads "
            "ORDER BY id DESC LIMIT ?",
            (int(limit),),
        )
        for row in rows:
            row["head"] = bytes(row["head"])
        return rows

    def row_counts(self) -> dict[str, int]:
        names = (
            "devices",
            "status",
            "telemetry",
            "events",
            "command_acks",
            "rejected_payloads",
            "device_models",
        )
        return {n: int(self.query(f"SELECT COUNT(*) AS n FROM {n}")[0]["n"]) for n in names}

    def __enter__(self) -> FleetStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _filters(**values: str | None) -> tuple[str, tuple]:
    used = [(k, v) for k, v in values.items() if v is not None]
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(f"{k} = ?" for k, _ in used), tuple(v for _, v in used)


# ------------------------------------------------------------------------------------------------
# The SQL both databases share


class _SQLStore(FleetStore):
    """The implementation: the same SQL for both, dialect details in the subclasses."""

    placeholder = "?"
    transient_errors: tuple[type[BaseException], ...] = ()
    data_errors: tuple[type[BaseException], ...] = (ValueError, OverflowError)

    def __init__(self, *, keep_rejected: int = DEFAULT_KEEP_REJECTED) -> None:
        self.keep_rejected = keep_rejected
        self._write_conn: Any = None
        self._write_lock = threading.Lock()
        self._read_conn: Any = None
        self._read_lock = threading.Lock()
        self._rejections = 0
        self._closed = False

    # -- dialect hooks -----------------------------------------------------------------------------

    @abc.abstractmethod
    def _connect(self, *, for_write: bool) -> Any: ...

    @abc.abstractmethod
    def _transaction(self, conn: Any) -> contextlib.AbstractContextManager: ...

    @abc.abstractmethod
    def _fetch(self, conn: Any, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]: ...

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _execute(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> int:
        return conn.execute(self._sql(sql), tuple(params)).rowcount

    # -- schema ------------------------------------------------------------------------------------

    def _create_tables(self, conn: Any, tables: list[TableSpec]) -> None:
        for table in tables:
            self._execute(conn, f"CREATE TABLE IF NOT EXISTS {table.name} ({table.columns})")
            for statement in table.extra:
                self._execute(conn, statement)
        rows = self._fetch(conn, "SELECT version FROM schema_info", ())
        if not rows:
            self._execute(conn, "INSERT INTO schema_info (version) VALUES (?)", (SCHEMA_VERSION,))
        elif rows[0]["version"] > SCHEMA_VERSION:
            raise StoreError(
                f"{self.url}: the store has schema version {rows[0]['version']}; this edgewise reads "
                f"up to {SCHEMA_VERSION} (upgrade edgewise)"
            )

    # -- writing -----------------------------------------------------------------------------------

    def write(self, decisions: Sequence[Decision], *, worker: str) -> list[str]:
        if not decisions:
            return []
        with self._write_lock:
            try:
                return self._write_once(decisions, worker)
            except self.data_errors:
                pass
            # a payload the database refused: one at a time, so that only it is turned away
            outcomes = []
            for decision in decisions:
                try:
                    outcomes += self._write_once([decision], worker)
                except self.data_errors as exc:
                    refused = replace(
                        decision,
                        action="reject",
                        reason="unstorable",
                        detail=f"the database refused it: {type(exc).__name__}: {exc}"[:2000],
                        payload=None,
                    )
                    outcomes += self._write_once([refused], worker)
            return outcomes

    def _write_once(self, decisions: Sequence[Decision], worker: str) -> list[str]:
        try:
            if self._write_conn is None:
                self._write_conn = self._connect(for_write=True)
            conn = self._write_conn
            with self._transaction(conn):
                outcomes = self._write_batch(conn, decisions, worker)
        except self.transient_errors as exc:
            self._drop_write_conn()
            raise TransientStoreError(f"{self.url}: {type(exc).__name__}: {exc}".strip()) from exc
        self._maybe_prune()
        return outcomes

    def _drop_write_conn(self) -> None:
        conn, self._write_conn = self._write_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _write_batch(self, conn: Any, decisions: Sequence[Decision], worker: str) -> list[str]:
        counts: Counter[tuple[str, str]] = Counter()
        rejected: list[tuple] = []
        by_table: dict[str, list[tuple[int, tuple]]] = {}
        for i, d in enumerate(decisions):
            counts["received", d.kind] += 1
            if d.action == "ignore":
                counts["ignored", d.kind] += 1
            elif d.action == "reject":
                msg = d.message
                rejected.append(
                    (
                        msg.received_at,
                        worker,
                        msg.topic,
                        d.reason,
                        d.detail,
                        len(msg.payload),
                        msg.payload[:HEAD_BYTES],
                    )
                )
                counts["rejected", d.reason or "unknown"] += 1
            else:
                table, row = _payload_row(d, worker)
                by_table.setdefault(table, []).append((i, row))
        if rejected:
            self._insert_rows(conn, "rejected_payloads", REJECTED_COLUMNS, rejected)
            self._rejections += len(rejected)
        stored: set[int] = set()
        for table, items in by_table.items():
            new = self._insert_new(conn, table, PAYLOAD_COLUMNS[table], [row for _, row in items])
            for i, row in items:
                if row[:3] in new:  # (fleet, device, key); a second copy in the same batch is a duplicate
                    new.discard(row[:3])
                    stored.add(i)
        outcomes = []
        devices: dict[tuple[str, str], dict[str, Any]] = {}
        models: dict[tuple[str, str, str | None], tuple[str, str, float, float]] = {}
        for i, d in enumerate(decisions):
            if d.action != "store":
                outcomes.append("ignored" if d.action == "ignore" else "rejected")
                continue
            if i not in stored:
                counts["duplicates", d.kind] += 1
                outcomes.append("duplicate")
                continue
            counts["stored", d.kind] += 1
            outcomes.append("stored")
            at = d.message.received_at
            seen = devices.setdefault(
                (d.fleet, d.device), {"first": at, "last": at, "status": None, "telemetry": None}
            )
            seen["first"], seen["last"] = min(seen["first"], at), max(seen["last"], at)
            p = d.payload
            if isinstance(p, Status):
                seen["status"] = (p, at)  # the one received last wins
                if p.model is not None:
                    _merge_model(
                        models, (d.fleet, d.device, None), (p.model.name, p.model.version, p.ts, p.ts)
                    )
            elif isinstance(p, Telemetry):
                seen["telemetry"] = max(seen["telemetry"] or p.ts, p.ts)  # the newest report
            elif isinstance(p, Event) and p.model is not None:
                _merge_model(models, (d.fleet, d.device, p.task), (p.model.name, p.model.version, p.ts, p.ts))
        self._upsert_devices(conn, devices)
        self._upsert_models(conn, models)
        self._upsert_rows(
            conn,
            "ingest_counters",
            ("worker", "counter", "label", "value"),
            [(worker, counter, label, value) for (counter, label), value in sorted(counts.items())],
            conflict="worker, counter, label",
            update="value = ingest_counters.value + excluded.value",
        )
        return outcomes

    # -- multi-row statements (one statement per chunk, not one per row) --------------------------

    max_params = 30_000  # per statement; SQLite's own limit may be lower (see SQLiteStore)
    returning = True  # INSERT ... RETURNING (SQLite >= 3.35)

    def _chunks(self, rows: Sequence[tuple], width: int) -> Iterator[Sequence[tuple]]:
        size = max(1, min(1000, self.max_params // width))
        for start in range(0, len(rows), size):
            yield rows[start : start + size]

    @staticmethod
    def _values(columns: Sequence[str], n: int) -> str:
        one = "(" + ", ".join("?" * len(columns)) + ")"
        return ", ".join([one] * n)

    def _insert_rows(self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
        for chunk in self._chunks(rows, len(columns)):
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {self._values(columns, len(chunk))}"
            self._execute(conn, sql, [v for row in chunk for v in row])

    def _insert_new(
        self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[tuple]
    ) -> set[tuple[str, str, str]]:
        """Insert the rows whose (fleet, device, key) is not stored yet; the ones inserted."""
        conflict = "ON CONFLICT (fleet, device, key) DO NOTHING"
        names = ", ".join(columns)
        if not self.returning:
            one = f"INSERT INTO {table} ({names}) VALUES {self._values(columns, 1)} {conflict}"
            return {tuple(row[:3]) for row in rows if self._execute(conn, one, row) == 1}
        new: set[tuple[str, str, str]] = set()
        for chunk in self._chunks(rows, len(columns)):
            sql = (
                f"INSERT INTO {table} ({names}) VALUES {self._values(columns, len(chunk))} {conflict} "
                "RETURNING fleet, device, key"
            )
            found = self._fetch(conn, self._sql(sql), [v for row in chunk for v in row])
            new.update((r["fleet"], r["device"], r["key"]) for r in found)
        return new

    def _upsert_rows(
        self,
        conn: Any,
        table: str,
        columns: Sequence[str],
        rows: Sequence[tuple],
        *,
        conflict: str,
        update: str,
    ) -> None:
        """INSERT ... ON CONFLICT DO UPDATE; ``rows`` must not repeat a conflict key."""
        for chunk in self._chunks(rows, len(columns)):
            sql = (
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES {self._values(columns, len(chunk))} "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {update}"
            )
            self._execute(conn, sql, [v for row in chunk for v in row])

    def _upsert_devices(self, conn: Any, devices: dict[tuple[str, str], dict[str, Any]]) -> None:
        last_seen = (
            "last_seen = CASE WHEN excluded.last_seen > devices.last_seen THEN excluded.last_seen "
            "ELSE devices.last_seen END, telemetry_ts = CASE WHEN devices.telemetry_ts IS NULL OR "
            "excluded.telemetry_ts > devices.telemetry_ts THEN excluded.telemetry_ts ELSE devices.telemetry_ts END"
        )
        quiet = [
            (f, d, s["first"], s["last"], s["telemetry"])
            for (f, d), s in sorted(devices.items())
            if s["status"] is None
        ]
        self._upsert_rows(
            conn,
            "devices",
            ("fleet", "device", "first_seen", "last_seen", "telemetry_ts"),
            quiet,
            conflict="fleet, device",
            update=last_seen,
        )
        newer = "(devices.state_received IS NULL OR excluded.state_received >= devices.state_received)"
        sets = ", ".join(
            f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE devices.{c} END" for c in DEVICE_STATE_COLUMNS
        )
        rows = []
        for (fleet, device), seen in sorted(devices.items()):
            if seen["status"] is not None:
                p, received = seen["status"]
                model = p.model
                rows.append(
                    (fleet, device, seen["first"], seen["last"], seen["telemetry"], p.state, p.reason, p.ts, received,
                     model.name if model else None, model.version if model else None, p.edgewise_version, p.uptime_s)
                )  # fmt: skip
        self._upsert_rows(
            conn,
            "devices",
            ("fleet", "device", "first_seen", "last_seen", "telemetry_ts", *DEVICE_STATE_COLUMNS),
            rows,
            conflict="fleet, device",
            update=f"{last_seen}, {sets}",
        )

    def _upsert_models(
        self, conn: Any, models: dict[tuple[str, str, str | None], tuple[str, str, float, float]]
    ) -> None:
        if not models:
            return
        resolved: dict[tuple[str, str, str], tuple[str, str, float, float]] = {}
        since: dict[tuple[str, str, str], float] = {}
        unknown = {}  # rows a status made before the model's task was known
        if any(task is not None for _, _, task in models):
            unknown = {
                (r["fleet"], r["device"], r["model_name"]): r
                for r in self._fetch(
                    conn,
                    self._sql(
                        "SELECT fleet, device, model_name, model_version, since FROM device_models WHERE task = ''"
                    ),
                    (),
                )
            }
        # the models events name first (they know the task), then those only a status names
        order = sorted(models.items(), key=lambda kv: (kv[0][2] is None, kv[0][:2], kv[0][2] or ""))
        for (fleet, device, task), (name, version, first, ts) in order:
            in_batch = [
                t for (f, dv, t), m in resolved.items() if (f, dv) == (fleet, device) and m[0] == name
            ]
            if task is None and in_batch:
                task = in_batch[0]
            elif task is None:  # a status names the model, not its task: the task it was seen with, if any
                known = self._fetch(
                    conn,
                    self._sql(
                        "SELECT task FROM device_models WHERE model_name = ? AND task <> '' "
                        "ORDER BY CASE WHEN fleet = ? AND device = ? THEN 0 ELSE 1 END LIMIT 1"
                    ),
                    (name, fleet, device),
                )
                task = known[0]["task"] if known else ""
            elif (fleet, device, name) in unknown:  # the task is known now: that row is replaced
                row = unknown.pop((fleet, device, name))
                if row["model_version"] == version:
                    since[fleet, device, task] = row["since"]
                self._execute(
                    conn,
                    "DELETE FROM device_models WHERE fleet = ? AND device = ? AND task = '' AND model_name = ?",
                    (fleet, device, name),
                )
            _merge_model(resolved, (fleet, device, task), (name, version, first, ts))
        older = "excluded.updated_ts < device_models.updated_ts"
        same = "excluded.model_name = device_models.model_name AND excluded.model_version = device_models.model_version"
        rows = [
            (fleet, device, task, name, version, min(first, since.get((fleet, device, task), first)), ts)
            for (fleet, device, task), (name, version, first, ts) in sorted(resolved.items())
        ]
        self._upsert_rows(
            conn,
            "device_models",
            ("fleet", "device", "task", "model_name", "model_version", "since", "updated_ts"),
            rows,
            conflict="fleet, device, task",
            update=(
                f"since = CASE WHEN {older} THEN device_models.since WHEN {same} THEN CASE WHEN "
                "excluded.since < device_models.since THEN excluded.since ELSE device_models.since END "
                "ELSE excluded.since END, "
                f"model_name = CASE WHEN {older} THEN device_models.model_name ELSE excluded.model_name END, "
                f"model_version = CASE WHEN {older} THEN device_models.model_version ELSE excluded.model_version END, "
                f"updated_ts = CASE WHEN {older} THEN device_models.updated_ts ELSE excluded.updated_ts END"
            ),
        )

    def _maybe_prune(self) -> None:
        if self._rejections < _PRUNE_EVERY:
            return
        self._rejections = 0
        with contextlib.suppress(*self.transient_errors), self._transaction(self._write_conn):
            self._execute(
                self._write_conn,
                "DELETE FROM rejected_payloads WHERE id <= (SELECT MAX(id) FROM rejected_payloads) - ?",
                (self.keep_rejected,),
            )

    # -- reading -----------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._read_lock:
            if self._closed:
                raise StoreError(f"{self.url}: the store is closed")
            try:
                if self._read_conn is None:
                    self._read_conn = self._connect(for_write=False)
                return self._fetch(self._read_conn, self._sql(sql), params)
            except self.transient_errors as exc:
                conn, self._read_conn = self._read_conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                raise TransientStoreError(f"{self.url}: {type(exc).__name__}: {exc}".strip()) from exc

    def close(self) -> None:
        with self._write_lock:
            self._drop_write_conn()
        with self._read_lock:
            self._closed = True
            conn, self._read_conn = self._read_conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


def _merge_model(models: dict, key: tuple, value: tuple[str, str, float, float]) -> None:
    """Keep the newest model report per key as (name, version, first ts, newest ts): the same
    model again keeps its first ts (its ``since``); another one replaces it when it is newer."""
    old = models.get(key)
    if old is not None and old[:2] == value[:2]:
        models[key] = (*value[:2], min(old[2], value[2]), max(old[3], value[3]))
    elif old is None or value[3] >= old[3]:
        models[key] = value


# ------------------------------------------------------------------------------------------------
# SQLite


class SQLiteStore(_SQLStore):
    """A SQLite file in WAL mode; several processes may write it (one at a time)."""

    kind = "sqlite"
    returning = sqlite3.sqlite_version_info >= (3, 35)  # else one INSERT a row
    transient_errors = (sqlite3.OperationalError,)
    data_errors = (
        sqlite3.IntegrityError,
        sqlite3.DataError,
        sqlite3.InterfaceError,
        ValueError,
        OverflowError,
    )

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        synchronous: str = "full",
        create: bool = True,
        busy_timeout_s: float = 30.0,
        keep_rejected: int = DEFAULT_KEEP_REJECTED,
    ) -> None:
        super().__init__(keep_rejected=keep_rejected)
        self.path = Path(path).expanduser()
        self.url = f"sqlite:///{self.path}" if self.path.is_absolute() else f"sqlite:{self.path}"
        if synchronous.lower() not in ("full", "normal", "extra"):
            raise ConfigError(f"{self.url}: synchronous must be full, normal or extra, got {synchronous!r}")
        self.synchronous = synchronous.upper()
        self.busy_timeout_s = busy_timeout_s
        if not self.path.exists():
            if not create:
                raise StoreError(f"{self.path}: no such store (the ingest worker creates it)")
            if not self.path.parent.is_dir():
                raise StoreError(f"{self.path}: the folder {self.path.parent} does not exist")
        conn = self._connect(for_write=True)
        if hasattr(conn, "getlimit"):  # Python 3.11+: this build's limit (999 before SQLite 3.32)
            self.max_params = min(self.max_params, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
        else:
            self.max_params = 999
        try:
            with self._transaction(conn):
                self._create_tables(conn, _tables("INTEGER PRIMARY KEY", "BLOB"))
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{self.path}: not a usable SQLite store: {exc}") from None
        self._write_conn = conn

    def _connect(self, *, for_write: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from None
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.OperationalError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{self.path}: not a usable SQLite store: {exc}") from None
        return conn

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now: two writers never deadlock
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _fetch(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        return [dict(row) for row in conn.execute(sql, tuple(params)).fetchall()]


# ------------------------------------------------------------------------------------------------
# PostgreSQL


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise MissingDependencyError(
            'a postgresql:// store needs psycopg 3; install it with: pip install "psycopg[binary]"'
        ) from None
    return psycopg


class PostgresStore(_SQLStore):
    """PostgreSQL through psycopg 3: one connection for writes, one for reads."""

    kind = "postgresql"
    placeholder = "%s"

    def __init__(
        self, url: str, *, connect_timeout_s: float = 10.0, keep_rejected: int = DEFAULT_KEEP_REJECTED
    ) -> None:
        super().__init__(keep_rejected=keep_rejected)
        psycopg = _psycopg()
        self._dsn = url
        self.url = _hide_password(url)
        self.connect_timeout_s = connect_timeout_s
        self.transient_errors = (psycopg.OperationalError, psycopg.InterfaceError)
        self.data_errors = (psycopg.DataError, psycopg.IntegrityError, ValueError, OverflowError)
        conn = self._connect(for_write=True)
        try:
            with self._transaction(conn):
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
                self._create_tables(conn, _tables("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "BYTEA"))
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"{self.url}: cannot create the tables: {exc}") from None
        self._write_conn = conn

    def _connect(self, *, for_write: bool) -> Any:
        psycopg = _psycopg()
        from psycopg.rows import dict_row

        try:
            return psycopg.connect(
                self._dsn,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(1, int(self.connect_timeout_s)),
                application_name="edgewise-fleet-" + ("writer" if for_write else "reader"),
            )
        except psycopg.OperationalError as exc:
            raise TransientStoreError(f"{self.url}: cannot connect: {str(exc).strip()}") from None
        except psycopg.ProgrammingError as exc:  # a malformed connection string
            raise StoreError(f"{self.url}: {str(exc).strip()}") from None

    def _transaction(self, conn: Any) -> contextlib.AbstractContextManager:
        return conn.transaction()

    def _fetch(self, conn: Any, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        return conn.execute(sql, tuple(params)).fetchall()


def _hide_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ------------------------------------------------------------------------------------------------


def open_store(url: str | os.PathLike, *, create: bool = True, **kwargs: Any) -> FleetStore:
    """A store from a URL: ``postgresql://...`` (or ``postgres://``), ``sqlite:///ABS/PATH``,
    ``sqlite:REL/PATH``, or a plain file path (SQLite). SQLite takes ``?synchronous=normal``.
    With ``create=False`` a SQLite file must exist already (the page does not make empty stores)."""
    text = os.fspath(url)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStore(text, **kwargs)
    scheme = text.split(":", 1)[0] if "://" in text or text.startswith("sqlite:") else ""
    if scheme and scheme != "sqlite":
        raise ConfigError(
            f"store {text!r}: unknown scheme {scheme!r}; expected a file path, sqlite: or postgresql://"
        )
    path, _, query = text.partition("?")
    if scheme:
        path = path[len("sqlite:") :]
        if path.startswith("//"):  # sqlite:///abs/path (a file URL) and sqlite:////abs/path (SQLAlchemy's)
            path = "/" + path.lstrip("/")
    if not path:
        raise ConfigError(f"store {text!r}: no file path")
    options = dict(urllib.parse.parse_qsl(query))
    unknown = set(options) - {"synchronous"}
    if unknown:
        raise ConfigError(
            f"store {text!r}: unknown option(s) {', '.join(sorted(unknown))}; sqlite takes synchronous="
        )
    return SQLiteStore(path, create=create, synchronous=options.get("synchronous", "full"), **kwargs)


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes (for tests and benchmarks)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
