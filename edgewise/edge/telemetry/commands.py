"""Commands from the broker: bytes in, one ``command_ack`` out, whatever the bytes are.

::

    runner = CommandRunner(source="edgewise/lab/dev1/cmd", max_bytes=8 * 1024 * 1024)
    ack = runner.run(raw_bytes, handler)        # never raises: every failure is an ok=false ack

A command is refused before it is parsed when it is over ``max_bytes`` or nested deeper than
:data:`MAX_COMMAND_DEPTH` levels (see :func:`~.schema.load_json`): a payload of a few KB of
``[[[[...`` would otherwise exhaust the parser's stack. An invalid command's ack names the problem
and carries the command's ``id`` and ``action`` whenever they can be read, from the parsed object
or, for a payload refused unparsed, from the plain ``"key": value`` pairs at its start. A repeated
command id (an MQTT redelivery) is acked again without running the handler twice.
"""

from __future__ import annotations

import collections
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from edgewise.edge.telemetry.schema import Command, CommandAck, PayloadError, decode, load_json
from edgewise.errors import EdgewiseError

log = logging.getLogger(__name__)

MAX_COMMAND_DEPTH = 32  # a command and its args: {"args": {"x": [...]}} is 3 levels
REMEMBERED_ACKS = 256  # acks kept to answer a redelivered command id without running it again
_PEEK_BYTES = 4096  # how much of an unparsed command is searched for its id and action
_MAX_ERROR_CHARS = 2000

CommandHandler = Callable[[Command], Any]

# One plain top-level pair at the start of an object: "key": "string" | number | true | false | null
_PAIR = re.compile(
    rb'\s*"((?:[^"\\]|\\.){0,64})"\s*:\s*("(?:[^"\\]|\\.){0,512}"|-?\d{1,20}|true|false|null)\s*([,}])',
    re.S,
)


def parse_command(raw: bytes, *, max_bytes: int | None = None, source: str = "command") -> Command:
    """Validate command bytes; raises :class:`PayloadError` naming the problem (and nothing else)."""
    command = decode(raw, expect=Command, source=source, max_bytes=max_bytes, max_depth=MAX_COMMAND_DEPTH)
    assert isinstance(command, Command)
    return command


def peek_command(raw: bytes, *, max_bytes: int | None = None) -> tuple[str | None, str | None]:
    """Best-effort ``id`` and ``action`` of an invalid command, for its ack; never raises."""
    try:
        obj = load_json(raw, max_bytes=max_bytes, max_depth=MAX_COMMAND_DEPTH)
    except PayloadError:
        obj = _leading_pairs(bytes(raw[:_PEEK_BYTES]))
    except Exception:  # pragma: no cover - load_json raises PayloadError only
        return None, None
    if not isinstance(obj, dict):
        return None, None
    cmd_id, action = obj.get("id"), obj.get("action")
    cmd_id = str(cmd_id)[:128] if isinstance(cmd_id, (str, int)) and not isinstance(cmd_id, bool) else None
    return cmd_id or None, action[:64] if isinstance(action, str) else None


def _leading_pairs(prefix: bytes) -> dict[str, Any]:
    """The plain ``"key": value`` pairs at the start of a JSON object, up to the first nested
    value: enough to find ``id`` and ``action`` in a command too large or deep to parse."""
    found: dict[str, Any] = {}
    start = re.match(rb"\s*\{", prefix)
    if start is None:
        return found
    pos = start.end()
    for _ in range(16):
        m = _PAIR.match(prefix, pos)
        if m is None:
            break
        try:
            key, value = json.loads(b'"' + m[1] + b'"'), json.loads(m[2])
        except ValueError:
            break
        found.setdefault(key, value)
        if m[3] == b"}":
            break
        pos = m.end()
    return found


class CommandRunner:
    """Turns one command's bytes into its ack: parse, answer a redelivery, run the handler."""

    def __init__(self, *, source: str = "command", max_bytes: int | None = None) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self._recent: collections.OrderedDict[str, CommandAck] = collections.OrderedDict()

    def run(self, raw: bytes, handler: CommandHandler | None) -> CommandAck:
        """The ack for ``raw``; an invalid command, a missing handler or a handler that raises
        give ``ok: false`` acks that say why. Only a BaseException that is not an Exception
        (``SystemExit`` from a handler) passes through."""
        try:
            command = parse_command(raw, max_bytes=self.max_bytes, source=self.source)
        except PayloadError as exc:
            cmd_id, action = peek_command(raw, max_bytes=self.max_bytes)
            log.warning("telemetry: invalid command (id %r): %s", cmd_id, _clip(str(exc), 500))
            return self._ack(cmd_id, action, error=f"invalid command: {exc}")
        if command.id in self._recent:
            log.info("telemetry: command %r received again; acking without running it", command.id)
            return self._recent[command.id]
        ack = self._handle(command, handler)
        self._recent[command.id] = ack
        while len(self._recent) > REMEMBERED_ACKS:
            self._recent.popitem(last=False)
        return ack

    def refuse(self, raw: bytes, reason: str) -> CommandAck:
        """An ``ok: false`` ack for a command that will not run (the device is shutting down, the
        worker failed on it); never raises."""
        cmd_id, action = peek_command(raw, max_bytes=self.max_bytes)
        return self._ack(cmd_id, action, error=reason)

    def _handle(self, command: Command, handler: CommandHandler | None) -> CommandAck:
        if handler is None:
            return self._ack(
                command.id, command.action, error="no command handler is installed on this device"
            )
        try:
            result = handler(command)
        except EdgewiseError as exc:  # the command cannot be done (bad args, a failed deploy): say why
            log.warning("telemetry: command %r (%s) refused: %s", command.id, command.action, exc)
            return self._ack(command.id, command.action, error=str(exc) or type(exc).__name__)
        except Exception as exc:  # a bug in the handler: keep the traceback in the log
            log.exception("telemetry: command %r (%s) failed", command.id, command.action)
            return self._ack(command.id, command.action, error=_describe(exc))
        try:
            if isinstance(result, BaseModel):
                result = result.model_dump(mode="json", by_alias=True)
            return CommandAck(id=command.id, action=command.action, ok=True, result=result)
        except (ValidationError, ValueError) as exc:
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            return self._ack(command.id, command.action, error=f"the handler's result is not JSON: {reason}")

    @staticmethod
    def _ack(cmd_id: str | None, action: str | None, *, error: str) -> CommandAck:
        return CommandAck(id=cmd_id, action=action, ok=False, error=_clip(error, _MAX_ERROR_CHARS))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
