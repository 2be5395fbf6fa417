"""The ``describe`` command's arguments, checked and turned into OpenAI chat messages.

The device has no model for images or video: ``describe`` always goes to the cloud's
vision-language model (``offload.vision``). Two forms::

    {"image_b64": "<base64 of a PNG/JPEG/GIF/WebP>", "prompt": "What is on the table?", "max_tokens": 128}
    {"video_b64": "<base64 of an MP4/WebM>", "mime": "video/mp4"}
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "..."},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}]}

The media travels in the request as a ``data:`` URL (the cloud is never asked to fetch a URL the
device names). ``mime`` may be left out for the image formats above (read from the file's first
bytes). :func:`describe_messages` raises :class:`DescribeInputError` naming what is wrong.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from edgewise.edge.command_args import check_command_args, decode_base64
from edgewise.edge.offload.config import VisionRule
from edgewise.errors import DataError

DESCRIBE_ARGS = {"image_b64", "video_b64", "mime", "prompt", "max_tokens", "messages"}
MAX_MESSAGES = 64
ROLES = ("system", "user", "assistant")
MEDIA_PARTS = ("image_url", "video_url")
_MIME = re.compile(r"^(image|video)/[a-z0-9.+-]{1,64}$")
_DATA_URL = re.compile(r"^data:(image|video)/[a-z0-9.+-]{1,64};base64,", re.IGNORECASE)


class DescribeInputError(DataError):
    """A describe request that cannot be sent: no media, bad base64, an unknown format."""


def sniff_mime(data: bytes) -> str | None:
    """The media type from a file's first bytes (the common image and video containers)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def describe_messages(args: Any, rule: VisionRule) -> tuple[list[dict[str, Any]], int]:
    """(chat messages, max_tokens) for a ``describe`` command's ``args``."""
    args = check_command_args("describe", args, DESCRIBE_ARGS, {}, DescribeInputError)
    max_tokens = args.get("max_tokens", rule.max_tokens)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 32768:
        raise DescribeInputError(
            f"describe: args.max_tokens must be an integer from 1 to 32768, got {max_tokens!r}"
        )
    if "messages" in args:
        extra = sorted(set(args) - {"messages", "max_tokens"})
        if extra:
            raise DescribeInputError(
                f"describe: args.messages goes alone (with max_tokens); also got {extra}"
            )
        return _check_messages(args["messages"]), max_tokens
    media = [key for key in ("image_b64", "video_b64") if key in args]
    if len(media) != 1:
        raise DescribeInputError(
            "describe needs exactly one of args.image_b64, args.video_b64 (base64 of the file) or "
            f"args.messages (OpenAI chat messages with image parts); got {'both' if media else 'none'}"
        )
    key = media[0]
    data = _b64(args[key], key)
    kind = key.split("_")[0]
    mime = args.get("mime") or sniff_mime(data)
    if mime is None:
        raise DescribeInputError(
            f"describe: args.{key} is not a PNG, JPEG, GIF, WebP, MP4 or WebM file; say its type in args.mime"
        )
    if not isinstance(mime, str) or not _MIME.match(mime) or not mime.startswith(kind + "/"):
        raise DescribeInputError(f"describe: args.mime must be an {kind}/... media type, got {mime!r}")
    prompt = args.get("prompt", rule.prompt)
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > 4000:
        raise DescribeInputError(
            "describe: args.prompt must be a non-empty string of at most 4000 characters"
        )
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    part = {"type": f"{kind}_url", f"{kind}_url": {"url": url}}
    return [{"role": "user", "content": [{"type": "text", "text": prompt}, part]}], max_tokens


def _b64(value: Any, key: str) -> bytes:
    return decode_base64(value, f"describe: args.{key}", error=DescribeInputError)


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise DescribeInputError(f"describe: args.messages must be a list of 1 to {MAX_MESSAGES} messages")
    media = 0
    for i, message in enumerate(messages):
        where = f"describe: args.messages[{i}]"
        if (
            not isinstance(message, dict)
            or set(message) - {"role", "content"}
            or message.get("role") not in ROLES
        ):
            raise DescribeInputError(f"{where} must be {{'role': one of {list(ROLES)}, 'content': ...}}")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not content:
            raise DescribeInputError(f"{where}.content must be a string or a non-empty list of parts")
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind in MEDIA_PARTS:
                url = (part.get(kind) or {}).get("url") if isinstance(part.get(kind), dict) else None
                if not isinstance(url, str) or not _DATA_URL.match(url):
                    raise DescribeInputError(
                        f"{where}.content[{j}].{kind}.url must be a data:image/... or data:video/... base64 URL "
                        "(the device sends the media itself)"
                    )
                media += 1
                continue
            raise DescribeInputError(
                f"{where}.content[{j}] must be a text, image_url or video_url part, got {str(part)[:80]}"
            )
    if not media:
        raise DescribeInputError(
            "describe: args.messages carries no image or video part; this command is for image and video understanding"
        )
    return messages
