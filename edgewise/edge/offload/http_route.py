"""The HTTP route to the cloud: urllib and ssl from the standard library, nothing else.

One :meth:`HttpRoute.post` is one attempt: a JSON body to ``url + path`` with the bearer token,
TLS verified against ``ca_file`` (the cloud's self-signed certificate or its CA; the system's CAs
when none is given), no redirects followed (a redirect could carry the token elsewhere), the reply
read up to ``max_reply_bytes``. Every way it can fail is an :class:`OffloadFailure` whose code
says which (timeout, unreachable, tls, unauthorized, ...) and whose message names the URL. The
socket timeout is ``timeout_s`` for each blocking step; the caller
(:class:`edgewise.edge.offload.cascade.Offload`) bounds the attempt as a whole.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edgewise import safejson
from edgewise.edge.offload.wire import OffloadFailure, code_for_status, error_message
from edgewise.errors import EdgewiseError

USER_AGENT = "edgewise-device"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None  # urllib then raises HTTPError with the 3xx status


class _ReplyError(EdgewiseError):
    pass


class HttpRoute:
    name = "http"

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ca_file: Path | None = None,
        max_reply_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.max_reply_bytes = max_reply_bytes
        handlers: list[Any] = [_NoRedirects()]
        if self.url.startswith("https:"):
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def describe(self) -> str:
        return self.url

    def post(self, path: str, body: dict[str, Any], timeout_s: float) -> Any:
        """One attempt: the parsed JSON of a 2xx reply, else OffloadFailure."""
        return self.request("POST", path, timeout_s, json_body=body)

    def request(
        self,
        method: str,
        path: str,
        timeout_s: float,
        *,
        json_body: Any = None,
        upload: Path | None = None,
        download: Path | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One request: the parsed JSON of a 2xx reply (with ``download``, the body is written to
        that file instead and its size returned), else OffloadFailure. ``upload`` streams a file as
        the body (``application/gzip``). The registry's client (``edgewise registry``) uses it too."""
        url = self.url + path
        sent = {"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        data: Any = None
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
            sent["Content-Type"] = "application/json"
        elif upload is not None:
            data = open(upload, "rb")  # noqa: SIM115 - closed below; urllib streams it
            sent["Content-Type"] = "application/gzip"
            sent["Content-Length"] = str(upload.stat().st_size)
        request = urllib.request.Request(url, data=data, headers=sent, method=method)
        try:
            with self._opener.open(request, timeout=timeout_s) as response:
                if download is not None:
                    return _save(response, download)
                raw = response.read(self.max_reply_bytes + 1)
        except urllib.error.HTTPError as exc:
            with exc:
                raw = _read_some(exc)
            message = error_message(_loads(raw)) or (
                raw[:200].decode("utf-8", "replace").strip() or exc.reason
            )
            raise OffloadFailure(
                code_for_status(exc.code), f"HTTP {exc.code} from {url}: {message}"
            ) from None
        except urllib.error.URLError as exc:
            raise _failure(exc.reason, url, timeout_s) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _failure(exc, url, timeout_s) from None
        finally:
            if hasattr(data, "close"):
                data.close()
        if len(raw) > self.max_reply_bytes:
            raise OffloadFailure("malformed", f"{url}: the reply is over {self.max_reply_bytes} bytes")
        try:
            return safejson.load_json(raw, source=url, max_bytes=self.max_reply_bytes, error=_ReplyError)
        except _ReplyError as exc:
            raise OffloadFailure("malformed", str(exc)) from None


def _save(response: Any, dest: Path) -> int:
    """Stream a reply body into ``dest`` (written aside, renamed when whole); its size."""
    from edgewise.fsutil import atomic_path

    size = 0
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        while chunk := response.read(1 << 20):
            fh.write(chunk)
            size += len(chunk)
    return size


def _read_some(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read(64 * 1024)
    except (OSError, http.client.HTTPException):
        return b""


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _failure(reason: Any, url: str, timeout_s: float) -> OffloadFailure:
    """An OffloadFailure for a transport error (what urllib wraps or raises)."""
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return OffloadFailure("timeout", f"{url}: no answer within {timeout_s:g} s")
    if isinstance(reason, ssl.SSLCertVerificationError):
        return OffloadFailure(
            "tls", f"{url}: the server's certificate did not verify ({reason.verify_message}); check ca_file"
        )
    if isinstance(reason, ssl.SSLError):
        return OffloadFailure("tls", f"{url}: TLS failed ({reason})")
    if isinstance(reason, (ConnectionRefusedError, socket.gaierror)) or (
        isinstance(reason, OSError) and not isinstance(reason, ConnectionError)
    ):
        text = getattr(reason, "strerror", None) or str(reason)
        return OffloadFailure("unreachable", f"{url}: cannot connect ({text})")
    if isinstance(reason, (ConnectionError, http.client.HTTPException)):
        return OffloadFailure(
            "connection", f"{url}: the connection failed ({type(reason).__name__}: {reason})"
        )
    return OffloadFailure("unreachable", f"{url}: {reason}")
