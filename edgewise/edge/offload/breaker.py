"""A circuit breaker for the cloud: stop asking a cloud that keeps failing, try again later.

States (Nygard's *Release It!* pattern, as resilience libraries name them):

- ``closed``: requests go out; ``failures`` failed requests in a row open it;
- ``open``: no request goes out for ``cooldown_s`` (the caller answers from the device at once);
- ``half-open``: after the cooldown one trial request goes out (others still get "open"); its
  success closes the breaker, its failure opens it for another cooldown.

Thread-safe; the clock is injectable for tests (``time.monotonic`` by default).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    def __init__(
        self, failures: int, cooldown_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError(f"failures must be >= 1 and cooldown_s > 0, got {failures}, {cooldown_s}")
        self.failures, self.cooldown_s, self.clock = failures, cooldown_s, clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._in_a_row = 0
        self._opened_at = 0.0
        self._trial_out = False
        self.opened = 0  # times it opened since it was made (telemetry takes differences)

    @property
    def state(self) -> str:
        with self._lock:
            return self._current()

    def _current(self) -> str:
        if self._state == OPEN and self.clock() - self._opened_at >= self.cooldown_s:
            self._state, self._trial_out = HALF_OPEN, False
        return self._state

    def allow(self) -> bool:
        """May a request go out now? In half-open, True once (the trial) until it is settled."""
        with self._lock:
            state = self._current()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._trial_out:
                self._trial_out = True
                return True
            return False

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial through (0 when not open)."""
        with self._lock:
            if self._current() != OPEN:
                return 0.0
            return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def success(self) -> None:
        with self._lock:
            self._state, self._in_a_row, self._trial_out = CLOSED, 0, False

    def failure(self) -> None:
        with self._lock:
            state = self._current()
            self._in_a_row += 1
            if state == HALF_OPEN or (state == CLOSED and self._in_a_row >= self.failures):
                self._state, self._opened_at, self._trial_out = OPEN, self.clock(), False
                self.opened += 1
