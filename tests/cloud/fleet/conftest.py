"""Real parts for the fleet tests: Mosquitto, a PostgreSQL server started here, ingest workers as
processes of their own (:mod:`edgewise.cloud.fleet.harness`), and a publisher that knows which
messages the broker acknowledged."""

from __future__ import annotations

import os
import time

import pytest

from edgewise.cloud.fleet.harness import (
    SAMPLE_MODEL,
    AckCountingPublisher,
    IngestProcess,
    numbered_event,
)
from edgewise.cloud.fleet.store import open_store
from edgewise.devtools.mosquitto import MosquittoBroker
from edgewise.errors import MissingDependencyError
from tests.conftest import missing_tool, require_module
from tests.edge.telemetry.conftest import make_broker  # noqa: F401  (fixture)

MODEL = SAMPLE_MODEL
event_payload = numbered_event


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the session (initdb + pg_ctl, trust auth, a free port)."""
    require_module("psycopg", 'psycopg is not installed: pip install "psycopg[binary]"')
    from edgewise.devtools.postgres import PostgresServer

    try:
        server = PostgresServer()
    except MissingDependencyError as exc:
        missing_tool(str(exc))
    server.start()
    yield server
    server.close()


_db_counter = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh, empty store of each kind (a new database on the session's PostgreSQL server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.sqlite'}"
    server = request.getfixturevalue("pg_server")
    return server.create_database(f"fleet_{os.getpid()}_{next(_db_counter)}")


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'fleet.sqlite'}"


@pytest.fixture
def open_stores():
    stores = []

    def make(url, **kwargs):
        store = open_store(url, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def publisher():
    pubs = []

    def make(broker, *, port=None, **kwargs) -> AckCountingPublisher:
        pub = AckCountingPublisher(broker.host, port or broker.port, **kwargs)
        pubs.append(pub)
        return pub

    yield make
    for pub in pubs:
        pub.close()


@pytest.fixture
def ingest_process(tmp_path):
    """``ingest_process(args)`` -> a started IngestProcess; killed at the end if still running."""
    procs = []

    def make(args: list[str]) -> IngestProcess:
        proc = IngestProcess(args, tmp_path / f"ingest{len(procs)}.log")
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.close()


def broker_args(broker: MosquittoBroker, store_url: str, client_id: str, *extra: str) -> list[str]:
    return ["--host", broker.host, "--port", str(broker.port), "--store", store_url, "--client-id", client_id,
            "--batch", "200", *extra]  # fmt: skip


def wait_rows(store, table: str, n: int, timeout: float = 60) -> int:
    """Poll until ``table`` holds at least ``n`` rows; returns the count (asserting on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        count = store.row_counts()[table]
        if count >= n:
            return count
        assert time.monotonic() < deadline, f"{table}: {count} of {n} rows after {timeout} s"
        time.sleep(0.1)
