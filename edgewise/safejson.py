"""JSON from untrusted bytes: size, encoding and nesting are checked before ``json.loads`` runs.

``json.loads`` recurses once per array or object, so a few KB of ``[[[[...`` raise
``RecursionError`` (not a ``ValueError``) from deep inside the parser. Everything that reads JSON
someone else wrote (MQTT commands and payloads, bundle manifests) goes through :func:`load_json`,
which measures the nesting on the raw bytes first and raises only the caller's error class.
Shared by the edge and export halves: the standard library and numpy only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from edgewise.errors import DataError, EdgewiseError

MAX_DEPTH = 64  # arrays and objects inside one another, the document itself counting as 1

# One JSON string (an unterminated one runs to the end): linear, never backtracks.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
# '[' and '{' -> +1, ']' and '}' -> -1 (as int8), every other byte deleted.
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in UTF-8 JSON text, found without parsing it:
    strings are cut out, then the brackets left are counted. Exact for valid JSON; for invalid
    text it counts the brackets outside strings."""
    brackets = _JSON_STRING.sub(b"", data).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    if not brackets:
        return 0
    return int(np.cumsum(np.frombuffer(brackets, dtype=np.int8), dtype=np.int64).max(initial=0))


def load_json(
    data: bytes | bytearray | str,
    *,
    source: str = "payload",
    max_bytes: int | None = None,
    max_depth: int = MAX_DEPTH,
    error: type[EdgewiseError] = DataError,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """``json.loads`` for untrusted input: refuses text over ``max_bytes`` bytes, text that is not
    UTF-8 and text nested deeper than ``max_depth`` before parsing it, so nothing but ``error``
    (naming ``source`` and the problem) can come out of it."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if max_bytes is not None and len(raw) > max_bytes:
        raise error(f"{source}: {len(raw)} bytes is over the limit of {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{source}: not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    depth = json_depth(raw)
    if depth > max_depth:
        raise error(f"{source}: nested {depth} levels deep; at most {max_depth} levels of arrays and objects")
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except ValueError as exc:  # JSONDecodeError, a duplicate key, an integer of more than 4300 digits
        raise error(f"{source}: not valid JSON: {exc}") from None
    except RecursionError:  # pragma: no cover - the depth check above keeps the parser shallow
        raise error(f"{source}: nested too deeply to parse") from None
