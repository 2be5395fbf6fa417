"""The checks every device command's ``args`` start with (the daemon's ``recommend`` and ``tts``),
and the base64 decoding of the commands that carry bytes (``infer``, ``describe``).

A command's ``args`` must be a JSON object with only the names the action takes and every name it
needs; :func:`check_command_args` says which is wrong, in the action's own error class, so the
daemon's ack (or the CLI's exit 2) carries the message. What each value must be is the action's
own check.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping
from typing import Any


def check_command_args(
    action: str,
    args: Any,
    allowed: Collection[str],
    required: Mapping[str, str],
    error: type[Exception],
) -> dict[str, Any]:
    """``args`` itself when it is a dict of ``allowed`` names holding every ``required`` one;
    otherwise ``error`` naming the problem. ``required``: name -> what it is, for the message
    ("args.text is required: the text to say")."""
    if not isinstance(args, dict):
        raise error(f"{action}: args must be an object, got {type(args).__name__}")
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise error(f"{action}: unknown argument(s) {unknown}; expected {sorted(allowed)}")
    for name, what in required.items():
        if name not in args:
            raise error(f"{action}: args.{name} is required: {what}")
    return args


def decode_base64(
    value: Any, where: str, *, error: type[Exception], type_error: type[Exception] | None = None
) -> bytes:
    """The bytes of a base64 ``value`` (``where``: the field, e.g. "infer: args.wav_b64"); an
    ``error`` saying what is wrong when it is not valid base64 or holds nothing, ``type_error``
    (default ``error``) when it is not a string at all."""
    if not isinstance(value, str):
        raise (type_error or error)(f"{where} must be a base64 string, got {type(value).__name__}")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise error(f"{where} could not be decoded: not valid base64 ({exc})") from None
    if not data:
        raise error(f"{where} holds nothing (0 bytes)")
    return data
