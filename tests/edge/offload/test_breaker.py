"""The circuit breaker on its own, with a clock the test moves."""

from __future__ import annotations

import pytest

from edgewise.edge.offload.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_failures_in_a_row_and_a_success_resets_the_count():
    clock = Clock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    breaker.success()  # the count starts again
    for _ in range(2):
        breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and breaker.opened == 1
    assert not breaker.allow() and breaker.retry_in() == pytest.approx(10.0)


def test_half_opens_after_the_cooldown_with_exactly_one_trial():
    clock = Clock()
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.failure()
    clock.now += 4.9
    assert breaker.state == OPEN and not breaker.allow()
    clock.now += 0.2
    assert breaker.state == HALF_OPEN
    assert breaker.allow()  # the trial
    assert not breaker.allow() and not breaker.allow()  # nothing else while it is out
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow()


def test_a_failed_trial_opens_it_for_another_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(2, 5.0, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.now += 5.0
    assert breaker.allow()
    breaker.failure()  # one failure in half-open is enough
    assert breaker.state == OPEN and breaker.opened == 2
    clock.now += 4.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


def test_settings_are_checked():
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0.0)
