"""Topic layout: ``edgewise/<fleet>/<device>/<kind>``, one subtree per device.

=======================================  =========  ======  =====================================
topic                                    direction  QoS     content (see :mod:`.schema`)
=======================================  =========  ======  =====================================
``edgewise/<fleet>/<device>/status``     device ->  1       ``status``, retained; the last will
                                                            is a retained ``offline`` status
``edgewise/<fleet>/<device>/telemetry``  device ->  0 or 1  ``telemetry``, one per interval
``edgewise/<fleet>/<device>/events``     device ->  1       ``event`` and ``error`` payloads
``edgewise/<fleet>/<device>/cmd``        -> device  1       ``command``
``edgewise/<fleet>/<device>/cmd/ack``    device ->  1       ``command_ack``
=======================================  =========  ======  =====================================

Fleet and device ids are single topic levels: non-empty, at most 128 characters, and free of the
MQTT wildcards ``+`` and ``#``, the level separator ``/``, control characters and a leading ``$``
(reserved for broker topics such as ``$SYS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgewise.errors import ConfigError

ROOT = "edgewise"
KINDS = ("status", "telemetry", "events", "cmd", "cmd/ack")
MAX_ID_LENGTH = 128


def id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a fleet or device id, or None when it can."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters, got {len(value)}"
    for char, name in (
        ("/", "'/' (topic level separator)"),
        ("+", "'+' (MQTT wildcard)"),
        ("#", "'#' (MQTT wildcard)"),
    ):
        if char in value:
            return f"must not contain {name}, got {value!r}"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"must not contain control characters, got {value!r}"
    if value.startswith("$"):
        return f"must not start with '$' (reserved for broker topics), got {value!r}"
    return None


def validate_id(value: object, field: str) -> str:
    """Return ``value`` if it is a valid fleet/device id, else raise ConfigError naming ``field``."""
    problem = id_problem(value)
    if problem:
        raise ConfigError(f"field '{field}': {problem}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class Topics:
    """The topics of one device. Construction validates both ids."""

    fleet: str
    device: str

    def __post_init__(self) -> None:
        validate_id(self.fleet, "fleet")
        validate_id(self.device, "device")

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.fleet}/{self.device}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def cmd_ack(self) -> str:
        return f"{self.base}/cmd/ack"


def fleet_filter(fleet: str, kind: str) -> str:
    """Subscription filter for one kind across a fleet, e.g. ``edgewise/lab/+/status``."""
    validate_id(fleet, "fleet")
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}; expected one of {', '.join(KINDS)}")
    return f"{ROOT}/{fleet}/+/{kind}"


def parse_topic(topic: str) -> tuple[str, str, str]:
    """Split an edgewise topic into ``(fleet, device, kind)``; ValueError for any other topic."""
    parts = topic.split("/")
    if len(parts) >= 4 and parts[0] == ROOT:
        kind = "/".join(parts[3:])
        if kind in KINDS and id_problem(parts[1]) is None and id_problem(parts[2]) is None:
            return parts[1], parts[2], kind
    raise ValueError(f"not an edgewise device topic: {topic!r}")
