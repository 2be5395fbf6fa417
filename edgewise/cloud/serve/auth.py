"""Bearer tokens: the server keeps only their sha256 digests.

A client sends ``Authorization: Bearer <token>``; the server hashes what it got and compares it,
in constant time, with each digest of its tokens file (one 64-character hex digest per line,
``#`` comments and blank lines allowed). A leaked tokens file gives no token away. Tokens are made
by :func:`new_token` (256 random bits, URL-safe) and written to the client side only
(``edgewise cloud serve-init``), in files of mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from edgewise.errors import ConfigError
from edgewise.fsutil import write_private

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_TOKEN_CHARS = 4096


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None when absent or another scheme)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > MAX_TOKEN_CHARS:
        return None
    return value


class TokenSet:
    """The digests of the tokens a server accepts."""

    def __init__(self, digests: list[str], source: str = "tokens") -> None:
        if not digests:
            raise ConfigError(f"{source}: no token digests; every request would be refused")
        self.digests = [bytes.fromhex(d) for d in digests]
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike) -> TokenSet:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: tokens file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the tokens file ({exc})") from None
        digests = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip().lower()
            if not line:
                continue
            if not _HEX64.match(line):
                raise ConfigError(
                    f"{path}: line {n}: expected the sha256 hex digest of a token (64 hex characters), "
                    f"got {len(line)} characters; never store a plain token on the server"
                )
            digests.append(line)
        return cls(digests, str(path))

    def accepts(self, authorization: str | None) -> bool:
        token = bearer_token(authorization)
        if token is None:
            return False
        got = hashlib.sha256(token.encode("utf-8")).digest()
        ok = False
        for digest in self.digests:  # every digest compared: the time says nothing about which
            ok |= hmac.compare_digest(got, digest)
        return ok


def write_secret(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically with mode 0600 from the start (a token, a key)."""
    return write_private(path, text)


def read_secret(path: str | os.PathLike, what: str) -> str:
    """The first line of a secret file; ConfigError when it is missing, empty or readable by others."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what}: {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read {path} ({exc})") from None
    if mode & 0o077:
        raise ConfigError(f"{what}: {path} is readable by others (mode {mode & 0o777:o}); chmod 600 it")
    value = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value
