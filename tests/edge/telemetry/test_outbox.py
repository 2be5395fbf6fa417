"""The disk outbox: order, persistence, the full policy, thread safety, a SIGKILL, bad files."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from edgewise.edge.telemetry.outbox import Outbox, OutboxError
from tests.edge.telemetry.conftest import REPO


def payloads(outbox, n=1000):
    return [r.payload.decode() for r in outbox.peek(n)]


def test_rows_keep_order_and_survive_reopening(tmp_path):
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as box:
        seqs = [box.put("t/a", f"m{i}", qos=i % 2, retain=i == 3, kind="event") for i in range(5)]
        assert seqs == sorted(seqs) and box.depth() == 5
        assert box.ack(seqs[1]) and not box.ack(seqs[1])  # a second ack of the same row is a no-op
        assert [r.seq for r in box.peek(2, after=seqs[0])] == [seqs[2], seqs[3]]
    with Outbox(path) as box:
        rows = box.peek(10)
        assert [r.payload for r in rows] == [b"m0", b"m2", b"m3", b"m4"]
        assert [(r.qos, r.retain, r.topic) for r in rows[:3]] == [
            (0, False, "t/a"),
            (0, False, "t/a"),
            (1, True, "t/a"),
        ]
        assert box.depth() == 4 and box.size_bytes() == 8
        assert box.put("t/a", "m5") > seqs[-1]  # seq never goes back, even after deletes and a reopen
        assert box.ack_many([r.seq for r in rows]) == 4 and payloads(box) == ["m5"]


def test_full_outbox_drops_oldest_telemetry_first_then_events_never_the_newest(tmp_path):
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, max_rows=6) as box:
        for i in range(3):
            box.put("t", f"tel{i}", kind="telemetry")
        for i in range(3):
            box.put("t", f"ev{i}", kind="event")
        box.put("t", "ack0", kind="ack")  # full: the oldest telemetry goes
        assert payloads(box) == ["tel1", "tel2", "ev0", "ev1", "ev2", "ack0"]
        box.put("t", "ev3", kind="event")
        box.put("t", "ev4", kind="event")  # telemetry gone: now it is events' turn
        assert payloads(box) == ["ev0", "ev1", "ev2", "ack0", "ev3", "ev4"]
        box.put("t", "tel3", kind="telemetry")  # the newest row gets in even though it ranks lowest
        assert payloads(box) == ["ev1", "ev2", "ack0", "ev3", "ev4", "tel3"]
        box.put("t", "tel4", kind="telemetry")
        assert payloads(box) == ["ev1", "ev2", "ack0", "ev3", "ev4", "tel4"]
        assert box.unreported_drops() == {"telemetry": 4, "event": 1}
        box.mark_reported({"telemetry": 4})
        assert box.unreported_drops() == {"event": 1}
    with Outbox(path, max_rows=6) as box:  # counters are on disk too
        assert box.unreported_drops() == {"event": 1} and box.dropped == {"event": 1}
        assert box.dropped_total == {"telemetry": 4, "event": 1}


def test_byte_limit_evicts_until_the_new_row_fits(tmp_path):
    with Outbox(tmp_path / "o.sqlite", max_bytes=100) as box:
        box.put("t", b"a" * 40, kind="event")
        box.put("t", b"b" * 40, kind="telemetry")
        box.put("t", b"c" * 30, kind="event")  # 110 > 100: telemetry goes first although it is newer
        assert [r.payload[:1] for r in box.peek()] == [b"a", b"c"] and box.size_bytes() == 70
        box.put("t", b"d" * 90, kind="error")  # needs 60 more bytes: both events go
        assert [r.payload[:1] for r in box.peek()] == [b"d"]
        assert box.unreported_drops() == {"telemetry": 1, "event": 2}
        with pytest.raises(ValueError, match="exceeds the outbox limit"):
            box.put("t", b"x" * 101)
        with pytest.raises(ValueError, match="unknown outbox kind 'status'"):
            box.put("t", b"x", kind="status")


def test_concurrent_puts_and_acks_stay_consistent(tmp_path):
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    acked = []
    done = threading.Event()

    def writer(k):
        for i in range(150):
            box.put("t", f"{k}-{i}")

    def acker():
        while not done.is_set() or box.depth():
            rows = box.peek(20)
            n = box.ack_many([r.seq for r in rows])
            acked.append(n)

    writers = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    ack_thread = threading.Thread(target=acker)
    ack_thread.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    ack_thread.join(30)
    assert sum(acked) == 600 and box.depth() == 0 and box.size_bytes() == 0
    box.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_survive_sigkill(tmp_path):
    path = tmp_path / "o.sqlite"
    script = textwrap.dedent(
        f"""
        from edgewise.edge.telemetry.outbox import Outbox
        box = Outbox({str(path)!r})
        i = 0
        while True:
            seq = box.put("t", f"m{{i}}".encode(), kind="event")
            print(seq, flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    confirmed = [int(proc.stdout.readline()) for _ in range(300)]  # put() returned for these
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with Outbox(path) as box:  # the lock died with the process, the file is intact
        seqs = [r.seq for r in box.peek(100_000)]
        assert set(confirmed) <= set(seqs) and seqs == list(range(1, len(seqs) + 1))
        assert box.peek(1)[0].payload == b"m0"


def test_files_that_are_not_outboxes_are_refused(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"\x00\x01 not a database " * 100)
    with pytest.raises(OutboxError, match="garbage.sqlite: not an edgewise outbox"):
        Outbox(garbage)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text)")
    with pytest.raises(OutboxError, match="an SQLite database, but not an edgewise outbox"):
        Outbox(other)
    truncated = tmp_path / "truncated.sqlite"
    with Outbox(truncated) as box:
        box.put("t", b"x" * 10_000)
    data = truncated.read_bytes()
    truncated.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    with pytest.raises(OutboxError, match="truncated.sqlite"):
        Outbox(truncated)


def test_one_process_at_a_time_and_no_use_after_close(tmp_path):
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    with pytest.raises(OutboxError, match="in use by another process"):
        Outbox(path)
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.put("t", b"x")
    Outbox(path).close()  # the lock was released


def test_commits_are_fsynced_by_default_so_a_power_cut_keeps_every_put(tmp_path):
    # SQLite's PRAGMA synchronous: 1 = NORMAL (WAL synced only at checkpoints), 2 = FULL (every commit)
    with Outbox(tmp_path / "full.sqlite") as box:
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    with Outbox(tmp_path / "normal.sqlite", synchronous="normal") as box:
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 1
