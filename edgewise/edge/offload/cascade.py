"""The cascade: the device answers first; when its rule declines, the cloud is asked, in bounded time.

::

    offload = Offload.from_config(config)                   # http; or mqtt_client=... for mqtt
    result = ser_result(offload, audio, device_result)      # offload may be None: "device"
    result = rec_result(offload, args, device_result, top_k=10, beam=20)
    result = describe_result(offload, args)                 # cloud only: raises without one

Every result carries ``source``: ``"device"`` (the device's answer stands: it is confident, or
offload is off for the task), ``"cloud"`` (the cloud's answer), or ``"device-fallback"`` (the
device declined but the cloud gave no usable answer: the device's answer, with the reason). When
offload is configured for the task, ``offload`` says why and how::

    "offload": {"asked": true, "why": "confidence 0.412 is below 0.6", "model": "ser-teacher",
                "route": "http", "attempts": 2, "breaker": "closed",
                "code": "timeout", "reason": "timeout: https://...: no answer within 2 s",
                "timings": {"device_ms": 3.1, "cloud_ms": 4203.5, "total_ms": 4206.6,
                            "cloud_server": null},           # the cloud's own timings when given
                "device": {...}}                             # the device's answer, when replaced

The result's ``latency_ms`` (and the daemon's latency percentiles) stay the device model's; the
cloud leg is in ``offload.timings`` and in telemetry's ``offload.cloud_ms``.

How a request is bounded (:meth:`Offload.call`): each attempt runs on a short-lived thread that
the caller waits for at most ``timeout_s`` (a cloud that accepts the connection and never answers
cannot hold the device longer; the thread ends on its own socket timeout, and at most
``max_in_flight`` such threads exist, past which a request fails at once with ``busy``); failures
that may pass (timeout, unreachable, a dropped connection, 5xx, 429, not connected) are retried up
to ``retries`` times after a backoff with jitter; others (401, 403, TLS, a malformed reply) are
not. So the device's answer is used at the latest after :attr:`OffloadConfig.max_wait_s`. A
request counts once in the circuit breaker (:mod:`.breaker`): a failure (after its retries), or a
success, including a refusal that shows the cloud is up (400, 404, 413); while the breaker is open
no request goes out and the answer is the device's at once (code ``breaker_open``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgewise.edge.offload.breaker import CircuitBreaker
from edgewise.edge.offload.config import OffloadConfig, read_token
from edgewise.edge.offload.describe import describe_messages
from edgewise.edge.offload.rules import rec_why, ser_why, top_confidence
from edgewise.edge.offload.wire import (
    CHAT_PATH,
    REC_PATH,
    SER_PATH,
    OffloadFailure,
    chat_request,
    check_chat_reply,
    check_rec_reply,
    check_ser_reply,
    rec_request,
    ser_request,
)
from edgewise.errors import ConfigError, EdgewiseError

log = logging.getLogger(__name__)

DEVICE, CLOUD, FALLBACK = "device", "cloud", "device-fallback"
MAX_IN_FLIGHT = 8


@dataclass
class Outcome:
    """What one request to the cloud came to."""

    reply: dict[str, Any] | None  # the checked reply, None when it failed
    failure: OffloadFailure | None
    attempts: int
    cloud_ms: float
    breaker: str

    @property
    def ok(self) -> bool:
        return self.reply is not None


class OffloadStats:
    """Counts for the daemon's telemetry (``offload`` in each report), per interval; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.asked = self.cloud = self.fallbacks = self.failed = 0
        self.reasons: Counter[str] = Counter()
        self.cloud_ms: list[float] = []

    def record(self, outcome: Outcome, *, fallback: bool) -> None:
        with self._lock:
            self.asked += 1
            if outcome.ok:
                self.cloud += 1
                self.cloud_ms.append(outcome.cloud_ms)
            else:
                assert outcome.failure is not None
                self.reasons[outcome.failure.code] += 1
                if fallback:
                    self.fallbacks += 1
                else:
                    self.failed += 1

    def take(self, breaker: CircuitBreaker, opened_before: int) -> dict[str, Any]:
        with self._lock:
            lat = np.asarray(self.cloud_ms, dtype=np.float64)
            report = {
                "asked": self.asked,
                "cloud": self.cloud,
                "fallbacks": self.fallbacks,
                "failed": self.failed,
                "reasons": dict(self.reasons),
                "breaker": breaker.state,
                "breaker_opened": breaker.opened - opened_before,
                "cloud_ms": (
                    {
                        k: round(float(np.percentile(lat, q)), 3)
                        for k, q in (("p50", 50), ("p90", 90), ("p99", 99))
                    }
                    if lat.size
                    else None
                ),
            }
            self._reset()
            return report


class Offload:
    """One cloud (one route, one breaker) and the per-task cascades."""

    def __init__(
        self,
        config: OffloadConfig,
        route: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.config = config
        self.route = route
        self.breaker = CircuitBreaker(config.breaker.failures, config.breaker.cooldown_s, clock=clock)
        self.stats = OffloadStats()
        self._sleep, self._rng = sleep, rng
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._opened_reported = 0

    @classmethod
    def from_config(cls, config: OffloadConfig, *, mqtt_client: Any = None, **kwargs: Any) -> Offload:
        """The route the config names: HTTP, or MQTT through ``mqtt_client`` (the daemon's
        :class:`~edgewise.edge.offload.mqtt_route.OffloadTelemetryClient`)."""
        token = read_token(config.token_file, "offload.token_file") if config.token_file else None
        if config.route == "mqtt":
            if mqtt_client is None:
                raise ConfigError(
                    "offload.route mqtt goes through the daemon's broker connection; use route http here"
                )
            from edgewise.edge.offload.mqtt_route import MqttRoute

            route: Any = MqttRoute(mqtt_client, token=token)
        else:
            from edgewise.edge.offload.http_route import HttpRoute

            assert config.url is not None
            route = HttpRoute(
                config.url,
                token=token,
                ca_file=config.ca_file,
                max_reply_bytes=int(config.max_reply_mb * 1024 * 1024),
            )
        return cls(config, route, **kwargs)

    # -- one request --------------------------------------------------------------------------

    def call(self, path: str, body: dict[str, Any], check: Callable[[Any, str], dict[str, Any]]) -> Outcome:
        """Ask the cloud (retries, backoff, breaker, bounded time); never raises for the cloud's
        failures: they are the outcome's ``failure``."""
        t0 = time.perf_counter()
        if not self.breaker.allow():
            failure = OffloadFailure(
                "breaker_open",
                f"the circuit breaker is open after {self.config.breaker.failures} failed requests in a "
                f"row; the next trial in {self.breaker.retry_in():.1f} s",
            )
            return Outcome(None, failure, 0, 0.0, self.breaker.state)
        cfg, attempts = self.config, 0
        where = f"{self.route.describe()}{path}"
        failure: OffloadFailure | None = None
        try:
            while True:
                attempts += 1
                try:
                    reply = check(self._attempt(path, body), where)
                except OffloadFailure as exc:
                    failure = exc
                else:
                    self.breaker.success()
                    return Outcome(reply, None, attempts, _ms(t0), self.breaker.state)
                if failure.code in OffloadFailure.ALIVE:
                    self.breaker.success()
                    break
                if not failure.retryable or attempts > cfg.retries:
                    self.breaker.failure()
                    break
                ceiling = cfg.backoff.ceiling(attempts - 1)
                self._sleep(ceiling * (1 - cfg.backoff.jitter * self._rng()))
        except BaseException:
            self.breaker.failure()  # a bug here must not leave a half-open trial out for ever
            raise
        if attempts > 1:
            failure = OffloadFailure(failure.code, f"{failure.detail} ({attempts} attempts)")
        log.warning("offload: %s: no answer from the cloud: %s", path, failure)
        return Outcome(None, failure, attempts, _ms(t0), self.breaker.state)

    def _attempt(self, path: str, body: dict[str, Any]) -> Any:
        """One attempt, waited for at most ``timeout_s`` whatever the route does."""
        timeout = self.config.timeout_s
        if not self._slots.acquire(blocking=False):
            raise OffloadFailure("busy", f"{MAX_IN_FLIGHT} earlier requests to the cloud are still hanging")
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["reply"] = self.route.post(path, body, timeout)
            except BaseException as exc:  # handed to the caller
                box["error"] = exc
            finally:
                self._slots.release()

        worker = threading.Thread(target=run, name="offload-attempt", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise OffloadFailure("timeout", f"{self.route.describe()}{path}: no answer within {timeout:g} s")
        if "error" in box:
            error = box["error"]
            if isinstance(error, OffloadFailure):
                raise error
            raise OffloadFailure(
                "connection", f"{self.route.describe()}{path}: {type(error).__name__}: {error}"
            )
        return box["reply"]

    def take_stats(self) -> dict[str, Any]:
        """The telemetry report's ``offload`` for the interval since the last call."""
        report = self.stats.take(self.breaker, self._opened_reported)
        self._opened_reported += report["breaker_opened"]
        return report

    # -- the cascades ---------------------------------------------------------------------------

    def _info(self, why: str, model: str, outcome: Outcome, device_ms: float | None) -> dict[str, Any]:
        failure = outcome.failure
        total = (device_ms or 0.0) + outcome.cloud_ms
        return {
            "asked": True,
            "why": why,
            "model": model,
            "route": self.route.name,
            "attempts": outcome.attempts,
            "breaker": outcome.breaker,
            "code": failure.code if failure else None,
            "reason": str(failure) if failure else None,
            "timings": {
                "device_ms": None if device_ms is None else round(device_ms, 3),
                "cloud_ms": round(outcome.cloud_ms, 3),
                "total_ms": round(total, 3),
                "cloud_server": outcome.reply.get("timings") if outcome.reply else None,
            },
        }

    def ser(self, audio: np.ndarray, result: dict[str, Any]) -> dict[str, Any]:
        rule = self.config.ser
        if rule is None:
            return {**result, "source": DEVICE}
        ask, why = ser_why(result, rule)
        if ask is None:
            return {**result, "source": DEVICE, "offload": {"asked": False, "why": why}}
        outcome = self.call(SER_PATH, ser_request(rule.model, audio), check_ser_reply)
        self.stats.record(outcome, fallback=True)
        info = self._info(ask, rule.model, outcome, result.get("latency_ms"))
        if not outcome.ok:
            return {**result, "source": FALLBACK, "offload": info}
        reply = outcome.reply
        info["device"] = {"label": result.get("label"), "confidence": round(top_confidence(result), 6)}
        return {
            **result,
            "label": reply["label"],
            "probabilities": reply["probabilities"],
            "source": CLOUD,
            "offload": info,
        }

    def rec(self, args: dict[str, Any], result: dict[str, Any], *, top_k: int, beam: int) -> dict[str, Any]:
        rule = self.config.rec
        if rule is None:
            return rec_result(None, args, result, top_k=top_k, beam=beam)
        ask, why = rec_why(args, top_k, beam)
        if ask is None:
            return {**result, "source": DEVICE, "offload": {"asked": False, "why": why}}
        k = args.get("k") if args.get("k") is not None else result.get("k", top_k)
        body = rec_request(rule.model, [str(x) for x in args.get("history", [])], k, args.get("beam"))
        outcome = self.call(REC_PATH, body, check_rec_reply)
        self.stats.record(outcome, fallback=True)
        device_ms = (result.get("timings") or {}).get("total_ms")
        info = self._info(ask, rule.model, outcome, device_ms)
        if not outcome.ok:
            return {**result, "source": FALLBACK, "offload": info}
        reply = outcome.reply
        info["device"] = {"items": result.get("items"), "scores": result.get("scores")}
        merged = {**result, **{key: reply[key] for key in ("items", "titles", "scores")}}
        merged["fallback"] = None
        return {**merged, "source": CLOUD, "offload": info}

    def describe(self, args: Any) -> dict[str, Any]:
        rule = self.config.vision
        if rule is None:
            return describe_result(None, args)
        messages, max_tokens = describe_messages(args, rule)
        outcome = self.call(CHAT_PATH, chat_request(rule.model, messages, max_tokens), check_chat_reply)
        self.stats.record(outcome, fallback=False)
        info = self._info("no on-device model for images or video", rule.model, outcome, None)
        if not outcome.ok:
            raise EdgewiseError(
                f"describe: the cloud gave no answer ({outcome.failure}); this device has no model for "
                "images or video to answer instead"
            )
        return {**outcome.reply, "source": CLOUD, "offload": info}


def ser_result(offload: Offload | None, audio: np.ndarray, result: dict[str, Any]) -> dict[str, Any]:
    """The SER cascade; without offload the device's result, marked ``source: "device"``."""
    return {**result, "source": DEVICE} if offload is None else offload.ser(audio, result)


def rec_result(
    offload: Offload | None, args: dict[str, Any], result: dict[str, Any], *, top_k: int, beam: int
) -> dict[str, Any]:
    """The recommend cascade. ``candidates: "cloud"`` without offload for rec is refused."""
    if offload is not None and offload.config.rec is not None:
        return offload.rec(args, result, top_k=top_k, beam=beam)
    if args.get("candidates") == "cloud":
        raise EdgewiseError(
            "recommend: candidates 'cloud' needs a cloud: this device has no offload.rec (set it in the "
            "device profile or daemon.yaml)"
        )
    return {**result, "source": DEVICE}


def describe_result(offload: Offload | None, args: Any) -> dict[str, Any]:
    """The describe command: the cloud's answer, or an error (the device has no model for it)."""
    if offload is None or offload.config.vision is None:
        raise EdgewiseError(
            "describe: this device has no model for images or video and no cloud to ask: configure "
            "offload.vision (and offload.url) in its device profile or daemon.yaml"
        )
    return offload.describe(args)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
