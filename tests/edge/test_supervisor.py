"""The worker supervisor with real threads: failures restart the worker, a clean return ends it."""

from __future__ import annotations

import threading
import time

import pytest

from edgewise.edge.supervisor import Supervisor

pytestmark = pytest.mark.timeout(30)


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_worker_that_raises_is_restarted_with_backoff_and_counted():
    calls: list[float] = []
    done = threading.Event()

    def worker():
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise RuntimeError(f"boom {len(calls)}")
        done.set()

    restarted = []
    sup = Supervisor(
        backoff_min_s=0.05, backoff_max_s=1.0, on_restart=lambda n, e: restarted.append((n, str(e)))
    )
    sup.spawn("worker", worker)
    assert done.wait(5)
    assert sup.join("worker", 1)  # a clean return ends it: not restarted again
    assert sup.restarts() == {"worker": 3}
    assert restarted == [("worker", "boom 1"), ("worker", "boom 2"), ("worker", "boom 3")]
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # the backoff doubles


def test_system_exit_in_a_worker_does_not_end_it():
    runs = []

    def worker():
        runs.append(1)
        if len(runs) == 1:
            raise SystemExit(1)

    sup = Supervisor(backoff_min_s=0.01)
    sup.spawn("w", worker)
    wait_until(lambda: len(runs) == 2)
    assert sup.restarts() == {"w": 1}


def test_a_loop_that_returns_early_is_restarted_only_when_asked():
    stop = threading.Event()
    runs = []

    def loop():
        runs.append(1)
        if len(runs) < 3:
            return  # a bug: it should run until stop is set
        stop.wait()

    sup = Supervisor(stop=stop, backoff_min_s=0.01)
    sup.spawn("loop", loop, restart_on_return=True)
    wait_until(lambda: len(runs) == 3)
    assert sup.restarts() == {"loop": 2}
    assert sup.stop(timeout=2) == []  # the event is the loop's own stop signal too
    assert sup.restarts() == {"loop": 2}

    once = []
    sup2 = Supervisor(backoff_min_s=0.01)
    sup2.spawn("once", lambda: once.append(1))
    assert sup2.join("once", 2) and once == [1] and sup2.restarts() == {}


def test_max_restarts_gives_up_and_calls_the_hook():
    given_up = []

    def worker():
        raise ValueError("always")

    sup = Supervisor(backoff_min_s=0.01)
    sup.spawn("w", worker, max_restarts=2, on_give_up=lambda exc: given_up.append(repr(exc)))
    assert sup.join("w", 5)
    assert sup.restarts() == {"w": 2} and given_up == ["ValueError('always')"]


def test_nothing_is_restarted_once_stopping():
    stop = threading.Event()
    started = threading.Event()
    runs = []

    def worker():
        runs.append(1)
        started.set()
        stop.wait()
        raise RuntimeError("dying while the process stops")

    sup = Supervisor(stop=stop, backoff_min_s=0.01)
    sup.spawn("w", worker)
    assert started.wait(2)
    assert sup.stop(timeout=2) == []
    assert runs == [1] and sup.restarts() == {}
    with pytest.raises(ValueError, match="backoff"):
        Supervisor(backoff_min_s=2, backoff_max_s=1)


def test_a_name_runs_once_at_a_time():
    sup = Supervisor()
    gate = threading.Event()
    sup.spawn("w", gate.wait)
    with pytest.raises(ValueError, match="already running"):
        sup.spawn("w", gate.wait)
    gate.set()
    assert sup.join("w", 2) and not sup.alive("w")
