"""A disk-backed outbox: every message is stored here before it goes to the broker.

paho-mqtt keeps unacknowledged messages in memory, which a restart or a crash loses. The
:class:`Outbox` keeps them in one SQLite database (WAL journal) until the broker has them: the
client calls :meth:`Outbox.put` first, publishes the rows from :meth:`Outbox.peek` in ``seq`` order
and calls :meth:`Outbox.ack` when the broker acknowledges one (QoS 1) or paho has written it to the
socket (QoS 0); a QoS 1 message the broker had no subscriber for (MQTT 5 PUBACK 0x10) stays, to be
sent again (see :mod:`.client`). Each put and ack is one committed transaction. A message may be sent twice after
a crash (at-least-once), never zero times.

What survives what
------------------
``synchronous="full"`` (the default) fsyncs the WAL on every commit: once :meth:`Outbox.put`
returns, the message survives ``kill -9``, a kernel panic and a power cut, provided the storage
honours fsync (an SD card or USB stick with a volatile write cache may not). An ack rolled back by
a power cut only means a duplicate. ``synchronous="normal"`` syncs only at checkpoints: a process
killed at any point still loses nothing it had put (the commit is in the OS's page cache), but a
power cut or kernel crash may roll back the commits since the last checkpoint, losing messages put
in the last moments before it. ``benchmarks/outbox_sync.py`` measures the price: about an fsync a
message, 200-280 messages/s against 3,400-5,600 with ``normal`` on the development machine's ext4,
far above the few messages a second a device sends.

When full
---------
The outbox holds at most ``max_rows`` messages and ``max_bytes`` bytes of payload. A put that
would go over evicts stored rows until the new one fits, in this order:

1. the oldest ``telemetry`` row, while any is left;
2. then the oldest ``event``;
3. then the oldest ``error``;
4. then the oldest ``ack`` (command acknowledgements).

The row being put is never dropped, so the newest data always gets in. Every eviction is counted
per kind; :meth:`Outbox.unreported_drops` returns the counts not yet reported (the client puts them
in the ``dropped`` field of the next telemetry payload and then calls :meth:`Outbox.mark_reported`),
and :attr:`Outbox.dropped_total` the counts since the file was created. Both survive a restart.

One process at a time: the outbox takes an exclusive lock on ``PATH.lock`` and a second open fails
with :class:`OutboxError`, as does opening a file that is not an edgewise outbox.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgewise.errors import EdgewiseError

log = logging.getLogger(__name__)

# Kinds in eviction order: the first is dropped first when the outbox is full.
DROP_ORDER = ("telemetry", "event", "error", "ack")
_RANK = {kind: rank for rank, kind in enumerate(DROP_ORDER)}

APPLICATION_ID = 0x45445742  # "EDWB": marks the file as an edgewise outbox
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE outbox (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    rank    INTEGER NOT NULL,
    created REAL    NOT NULL
);
CREATE INDEX outbox_eviction ON outbox (rank, seq);
CREATE TABLE drops (
    kind       TEXT PRIMARY KEY,
    unreported INTEGER NOT NULL DEFAULT 0,
    total      INTEGER NOT NULL DEFAULT 0
);
"""


class OutboxError(EdgewiseError):
    """The outbox file is unusable: not an outbox, from a newer edgewise, corrupt, or in use."""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str
    created: float


class Outbox:
    """Thread-safe disk queue of MQTT messages (see the module docstring for the full policy)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        max_rows: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        synchronous: Literal["normal", "full"] = "full",
    ) -> None:
        if max_rows < 1 or max_bytes < 1:
            raise ValueError(f"max_rows and max_bytes must be >= 1, got {max_rows} and {max_bytes}")
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._check_header()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_file_lock()
        try:
            self._db = self._open(synchronous)
            self._rows, self._bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
            ).fetchone()
        except BaseException:
            self._release_file_lock()
            raise

    # ----------------------------------------------------------------------------------------------
    # Opening

    def _take_file_lock(self) -> int | None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process guard
            return None
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutboxError(f"{self.path}: outbox is in use by another process") from None
        return fd

    def _release_file_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _check_header(self) -> None:
        if self.path.is_dir():
            raise OutboxError(f"{self.path}: is a directory, not an outbox file")
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                    raise OutboxError(f"{self.path}: not an edgewise outbox (not an SQLite database)")

    def _open(self, synchronous: str) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
            if app_id == 0 and tables == 0:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(
                    f"BEGIN; {_SCHEMA} PRAGMA application_id={APPLICATION_ID};"
                    f" PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
                )
            elif app_id != APPLICATION_ID:
                raise OutboxError(f"{self.path}: an SQLite database, but not an edgewise outbox")
            elif version > SCHEMA_VERSION:
                raise OutboxError(
                    f"{self.path}: outbox schema {version} was written by a newer edgewise "
                    f"(this one reads schema {SCHEMA_VERSION})"
                )
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                log.warning("%s: journal mode is %s, not wal", self.path, mode)
            db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise OutboxError(f"{self.path}: outbox database is corrupt ({check})")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise OutboxError(f"{self.path}: not a usable edgewise outbox ({exc})") from None
        except BaseException:
            db.close()
            raise
        return db

    # ----------------------------------------------------------------------------------------------
    # Queue operations

    def put(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        kind: str = "event",
    ) -> int:
        """Store one message and return its ``seq``; evicts older rows first when full."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if kind not in _RANK:
            raise ValueError(f"unknown outbox kind {kind!r}; expected one of {', '.join(DROP_ORDER)}")
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        if len(payload) > self.max_bytes:
            raise ValueError(
                f"payload of {len(payload)} bytes exceeds the outbox limit of {self.max_bytes} bytes"
            )
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                freed_rows, freed_bytes, dropped = self._evict_for(len(payload))
                seq = self._db.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, kind, rank, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (topic, payload, qos, int(retain), kind, _RANK[kind], time.time()),
                ).lastrowid
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._rows += 1 - freed_rows
            self._bytes += len(payload) - freed_bytes
        if dropped:
            log.warning(
                "outbox %s full: dropped %s", self.path, ", ".join(f"{n} {k}" for k, n in dropped.items())
            )
        return seq

    def _evict_for(self, nbytes: int) -> tuple[int, int, dict[str, int]]:
        """Delete the lowest-value rows until one more row of ``nbytes`` fits (inside a transaction)."""
        need_rows = self._rows + 1 - self.max_rows
        need_bytes = self._bytes + nbytes - self.max_bytes
        freed_rows = freed_bytes = 0
        dropped: dict[str, int] = {}
        if need_rows <= 0 and need_bytes <= 0:
            return 0, 0, dropped
        victims = []
        cursor = self._db.execute("SELECT seq, kind, LENGTH(payload) FROM outbox ORDER BY rank, seq")
        while freed_rows < need_rows or freed_bytes < need_bytes:
            row = cursor.fetchone()
            if row is None:
                break
            seq, kind, size = row
            victims.append((seq,))
            freed_rows += 1
            freed_bytes += size
            dropped[kind] = dropped.get(kind, 0) + 1
        cursor.close()
        self._db.executemany("DELETE FROM outbox WHERE seq = ?", victims)
        self._db.executemany(
            "INSERT INTO drops (kind, unreported, total) VALUES (?, ?, ?)"
            " ON CONFLICT(kind) DO UPDATE SET unreported = unreported + excluded.unreported,"
            " total = total + excluded.total",
            [(kind, n, n) for kind, n in dropped.items()],
        )
        return freed_rows, freed_bytes, dropped

    def peek(self, n: int = 100, after: int = 0, topic: str | None = None) -> list[OutboxRow]:
        """The first ``n`` rows with ``seq > after`` (and on ``topic``, if given), oldest first.
        Rows stay until acked."""
        where, args = ("seq > ?", (after,)) if topic is None else ("seq > ? AND topic = ?", (after, topic))
        with self._lock:
            self._check_open()
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain, kind, created FROM outbox"
                f" WHERE {where} ORDER BY seq LIMIT ?",
                (*args, n),
            ).fetchall()
        return [OutboxRow(s, t, bytes(p), q, bool(r), k, c) for s, t, p, q, r, k, c in rows]

    def topics(self) -> set[str]:
        """The topics that have rows waiting."""
        with self._lock:
            self._check_open()
            return {t for (t,) in self._db.execute("SELECT DISTINCT topic FROM outbox").fetchall()}

    def ack(self, seq: int) -> bool:
        """Delete a delivered row; False if it is not there (already acked or evicted)."""
        return self.ack_many([seq]) == 1

    def ack_many(self, seqs: Sequence[int]) -> int:
        """Delete several delivered rows in one transaction; returns how many were there."""
        if not seqs:
            return 0
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                deleted = freed_bytes = 0
                for start in range(0, len(seqs), 500):  # stay under old SQLite's 999-variable limit
                    chunk = list(seqs[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    n, size = self._db.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox WHERE seq IN ({marks})",
                        chunk,
                    ).fetchone()
                    self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)
                    deleted += n
                    freed_bytes += size
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._rows -= deleted
            self._bytes -= freed_bytes
        return deleted

    def depth(self) -> int:
        """Rows waiting for delivery."""
        with self._lock:
            return self._rows

    def size_bytes(self) -> int:
        """Payload bytes waiting for delivery."""
        with self._lock:
            return self._bytes

    # ----------------------------------------------------------------------------------------------
    # Drop counters

    def unreported_drops(self) -> dict[str, int]:
        """kind -> rows evicted since the last :meth:`mark_reported` (kinds with none are left out)."""
        return self._drops("unreported")

    @property
    def dropped_total(self) -> dict[str, int]:
        """kind -> rows evicted since the outbox file was created."""
        return self._drops("total")

    @property
    def dropped(self) -> dict[str, int]:
        """Same as :meth:`unreported_drops`."""
        return self.unreported_drops()

    def _drops(self, column: str) -> dict[str, int]:
        with self._lock:
            self._check_open()
            rows = self._db.execute(f"SELECT kind, {column} FROM drops WHERE {column} > 0").fetchall()
        return {kind: n for kind, n in sorted(rows, key=lambda r: _RANK.get(r[0], 99))}

    def mark_reported(self, counts: dict[str, int]) -> None:
        """Subtract counts that went out in a telemetry payload (drops since then stay counted)."""
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE drops SET unreported = MAX(0, unreported - ?) WHERE kind = ?",
                    [(n, kind) for kind, n in counts.items()],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # ----------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._db is None:
            raise OutboxError(f"{self.path}: outbox is closed")

    @property
    def closed(self) -> bool:
        return self._db is None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
                self._db = None
            self._release_file_lock()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._db is None else f"{self._rows} rows"
        return f"Outbox({str(self.path)!r}, {state})"
