"""Hypothesis strategies for fuzzing the parsers that read untrusted bytes: commands, telemetry
payloads and bundle manifests. The suite runs a small sample of each; ``benchmarks/fuzz_parsers.py``
runs 10^5 cases per parser with the same strategies."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

from edgewise.edge.telemetry.schema import ACTIONS, PAYLOAD_TYPES

# Any JSON value, NaN and infinities included (json.dumps writes them; a strict reader refuses them).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
keys = st.sampled_from(["id", "action", "args", "schema", "type", "ts", "label", "ok", "error"]) | st.text(
    max_size=8
)


def nested(depth: int, inner: str = "1") -> str:
    """``depth`` arrays and objects inside one another, around ``inner``."""
    text = inner
    for level in range(depth):
        text = f"[{text}]" if level % 2 else f'{{"k":{text}}}'
    return text


def dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8")


@st.composite
def bytes_around(draw, valid: st.SearchStrategy[bytes]) -> bytes:
    """Valid-looking bytes, sometimes cut short, spliced with junk or wrapped in deep nesting."""
    raw = draw(valid)
    how = draw(st.sampled_from(["as is", "truncate", "splice", "deep", "nul"]))
    if how == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif how == "splice":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=8)) + raw[at:]
    elif how == "deep":
        raw = nested(draw(st.integers(1, 3000)), raw.decode("utf-8", "replace") or "1").encode()
    elif how == "nul":
        raw = raw + b"\x00"
    return raw


# --------------------------------------------------------------------------------------------------
# Commands

command_dicts = st.fixed_dictionaries(
    {
        "id": st.text(max_size=10) | st.integers() | json_values,
        "action": st.sampled_from([*ACTIONS, "explode"]),
    },
    optional={
        "args": st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values,
        "schema": st.just(1) | json_values,
        "type": st.just("command") | st.text(max_size=8),
        "ts": st.floats(allow_nan=True) | st.none(),
        "extra": json_values,
    },
)
command_bytes = (
    st.binary(max_size=200)
    | command_dicts.map(dumps)
    | json_values.map(dumps)
    | bytes_around(command_dicts.map(dumps))
)


# --------------------------------------------------------------------------------------------------
# Telemetry payloads


@st.composite
def payload_dicts(draw) -> dict[str, Any]:
    """A payload of a known type with some of its own fields, given arbitrary JSON values."""
    kind = draw(st.sampled_from(sorted(PAYLOAD_TYPES)))
    fields = [*PAYLOAD_TYPES[kind].model_fields]
    obj: dict[str, Any] = {
        "schema": draw(st.just(1) | json_values),
        "type": draw(st.just(kind) | st.text(max_size=6)),
    }
    for name in draw(st.lists(st.sampled_from(fields), max_size=6, unique=True)):
        obj[name] = draw(json_values)
    if draw(st.booleans()):
        obj[draw(keys)] = draw(json_values)
    return obj


payload_bytes = (
    st.binary(max_size=200) | payload_dicts().map(dumps) | bytes_around(payload_dicts().map(dumps))
)
telemetry_fields = st.dictionaries(
    st.sampled_from(
        [
            "interval_s",
            "inferences",
            "inference_errors",
            "label_counts",
            "latency_ms",
            "cpu_percent",
            "rss_mb",
            "temperature_c",
            "outbox_depth",
            "dropped",
            "thread_restarts",
        ]
    ),
    json_values,
    max_size=6,
)
event_fields = st.dictionaries(
    st.sampled_from(
        ["id", "task", "model", "label", "probabilities", "latency_ms", "source", "result", "ts"]
    ),
    json_values,
    max_size=6,
)


# --------------------------------------------------------------------------------------------------
# Manifests


def _slots(obj: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every value in a JSON tree."""
    out = [path]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _slots(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _slots(v, (*path, i))
    return out


@st.composite
def mutated(draw, seed: dict[str, Any]) -> dict[str, Any]:
    """``seed`` with a few values replaced, deleted or added at random places."""
    obj = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_slots(obj)))
        if not path:
            continue
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(json_values)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return obj


def manifest_bytes(seed: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return (
        mutated(seed).map(dumps)
        | bytes_around(mutated(seed).map(dumps))
        | st.binary(max_size=200)
        | json_values.map(dumps)
    )
