"""Worker threads that come back: run named functions in threads and restart them when they fail.

::

    workers = Supervisor(stop=stop_event)            # stop_event set: no more restarts
    workers.spawn("reloader", daemon._reloader, restart_on_return=True)
    workers.spawn("audio", daemon._audio_loop, max_restarts=0, on_give_up=lambda exc: stop_event.set())
    ...
    workers.restarts()                               # {"reloader": 1}: reported in telemetry
    workers.join("reloader", timeout=5)

A worker that raises (anything, ``SystemExit`` included) is logged with its traceback and called
again in the same thread after a backoff that doubles from ``backoff_min_s`` to ``backoff_max_s``
(and starts over once the worker has run for ``backoff_max_s`` without failing). A worker that
returns is done, unless it was spawned with ``restart_on_return=True`` and the supervisor is not
stopping: a loop that should run until the stop event is set and returns early is a bug too. Once
the stop event is set nothing is restarted. ``max_restarts`` bounds the restarts of a worker whose
restart would do harm (``on_give_up`` then gets the last exception).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

RestartHook = Callable[[str, BaseException], None]


class _EarlyReturn(Exception):
    """A worker spawned with ``restart_on_return`` returned before the supervisor stopped."""


@dataclass
class _Worker:
    name: str
    target: Callable[[], object]
    restart_on_return: bool
    max_restarts: int | None
    on_give_up: Callable[[BaseException], None] | None
    thread: threading.Thread | None = None
    restarts: int = 0
    last_error: str | None = field(default=None)


class Supervisor:
    """Runs named worker functions in daemon threads and restarts them when they fail."""

    def __init__(
        self,
        *,
        stop: threading.Event | None = None,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 30.0,
        on_restart: RestartHook | None = None,
    ) -> None:
        if not 0 < backoff_min_s <= backoff_max_s:
            raise ValueError(f"need 0 < backoff_min_s <= backoff_max_s, got {backoff_min_s}, {backoff_max_s}")
        self.stop_event = stop if stop is not None else threading.Event()
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.on_restart = on_restart
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()

    def spawn(
        self,
        name: str,
        target: Callable[[], object],
        *,
        restart_on_return: bool = False,
        max_restarts: int | None = None,
        on_give_up: Callable[[BaseException], None] | None = None,
    ) -> threading.Thread:
        """Start ``target()`` in a thread called ``name`` (unique per supervisor) and watch it."""
        if max_restarts is not None and max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0 or None, got {max_restarts}")
        worker = _Worker(name, target, restart_on_return, max_restarts, on_give_up)
        with self._lock:
            old = self._workers.get(name)
            if old is not None and old.thread is not None and old.thread.is_alive():
                raise ValueError(f"a worker named {name!r} is already running")
            if old is not None:
                worker.restarts = old.restarts
            self._workers[name] = worker
            worker.thread = threading.Thread(target=self._run, args=(worker,), name=name, daemon=True)
        worker.thread.start()
        return worker.thread

    def _run(self, worker: _Worker) -> None:
        backoff = self.backoff_min_s
        while True:
            started = time.monotonic()
            try:
                worker.target()
                if not worker.restart_on_return or self.stop_event.is_set():
                    return
                raise _EarlyReturn(f"worker {worker.name!r} returned while it should keep running")
            except BaseException as exc:  # noqa: BLE001 - SystemExit in a worker ends only that worker
                if self.stop_event.is_set():
                    log.debug("worker %s ended with %r while stopping", worker.name, exc)
                    return
                if time.monotonic() - started >= self.backoff_max_s:
                    backoff = self.backoff_min_s  # it ran well for a while: start the backoff over
                if worker.max_restarts is not None and worker.restarts >= worker.max_restarts:
                    log.error("worker %s failed; not restarted", worker.name, exc_info=exc)
                    self._give_up(worker, exc)
                    return
                with self._lock:
                    worker.restarts += 1
                    worker.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.error(
                    "worker %s failed (restart %d in %.1f s): %s",
                    worker.name,
                    worker.restarts,
                    backoff,
                    worker.last_error,
                    exc_info=None if isinstance(exc, _EarlyReturn) else exc,
                )
                self._notify(worker, exc)
            if self.stop_event.wait(backoff):
                return
            backoff = min(backoff * 2, self.backoff_max_s)

    def _notify(self, worker: _Worker, exc: BaseException) -> None:
        if self.on_restart is None:
            return
        try:
            self.on_restart(worker.name, exc)
        except Exception:
            log.exception("on_restart hook failed for worker %s", worker.name)

    @staticmethod
    def _give_up(worker: _Worker, exc: BaseException) -> None:
        if worker.on_give_up is None:
            return
        try:
            worker.on_give_up(exc)
        except Exception:
            log.exception("on_give_up hook failed for worker %s", worker.name)

    # ----------------------------------------------------------------------------------------------

    def restarts(self) -> dict[str, int]:
        """name -> restarts since the worker was first spawned (workers never restarted left out)."""
        with self._lock:
            return {name: w.restarts for name, w in sorted(self._workers.items()) if w.restarts}

    def alive(self, name: str) -> bool:
        """True while the worker's thread runs (including a backoff wait before a restart)."""
        worker = self._workers.get(name)
        return worker is not None and worker.thread is not None and worker.thread.is_alive()

    def join(self, name: str, timeout: float | None = None) -> bool:
        """Wait for one worker's thread to end; True if it has (or never ran)."""
        worker = self._workers.get(name)
        if worker is None or worker.thread is None:
            return True
        if worker.thread is not threading.current_thread():
            worker.thread.join(timeout)
        return not worker.thread.is_alive()

    def stop(self, timeout: float = 5.0) -> list[str]:
        """Set the stop event (no more restarts) and wait up to ``timeout`` s in all for the threads;
        returns the names of those still running (the workers themselves must see the event or
        their own signal to return)."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for name in list(self._workers):
            self.join(name, max(0.0, deadline - time.monotonic()))
        return [name for name in self._workers if self.alive(name)]
