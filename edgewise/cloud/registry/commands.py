"""``edgewise registry push|list|promote|status|pull``: the registry's client (torch-free).

::

    edgewise registry push export/ser-tiny-1.1.0 --url https://cloud:8443 --token-file cloud.token --ca cloud.pem
    edgewise registry list [ser-tiny]
    edgewise registry promote ser-tiny 1.1.0 --fleet lab [--device pi-1 ...]
    edgewise registry status --fleet lab
    edgewise registry pull ser-tiny 1.1.0 --out downloads/ --key fleet.pub

The server is ``edgewise cloud serve`` with a ``registry:`` section. ``--url``, ``--token-file``
and ``--ca`` default to ``$EDGEWISE_CLOUD_URL``, ``$EDGEWISE_CLOUD_TOKEN_FILE`` and
``$EDGEWISE_CLOUD_CA``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgewise.errors import ConfigError, EdgewiseError

TIMEOUT_S = 120.0
PREFIX = "/registry/v1"


class RegistryClientError(EdgewiseError):
    pass


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", default=os.environ.get("EDGEWISE_CLOUD_URL"), help="the cloud server (https://HOST:PORT)"
    )
    p.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get("EDGEWISE_CLOUD_TOKEN_FILE"),
        help="the bearer token (a 0600 file, as `edgewise cloud serve-init` writes it)",
    )
    p.add_argument(
        "--ca", type=Path, default=os.environ.get("EDGEWISE_CLOUD_CA"), help="the server's certificate or CA"
    )
    p.add_argument("--json", action="store_true", help="print the server's JSON")


def _route(args: argparse.Namespace) -> Any:
    from edgewise.edge.offload.config import read_token
    from edgewise.edge.offload.http_route import HttpRoute

    if not args.url:
        raise ConfigError(
            "--url (or EDGEWISE_CLOUD_URL): the registry's server, e.g. https://cloud.example:8443"
        )
    if not args.url.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise ConfigError(f"--url {args.url!r}: https only (plain http to loopback only)")
    if args.ca is not None and not Path(args.ca).is_file():
        raise ConfigError(f"--ca {args.ca}: no such file")
    token = read_token(Path(args.token_file), "--token-file") if args.token_file else None
    return HttpRoute(args.url, token=token, ca_file=Path(args.ca) if args.ca else None)


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    from edgewise.edge.offload.wire import OffloadFailure

    try:
        return _route(args).request(method, PREFIX + path, TIMEOUT_S, **kwargs)
    except OffloadFailure as exc:
        raise RegistryClientError(f"registry: {exc}") from None


def _print(args: argparse.Namespace, reply: Any, lines: list[str]) -> None:
    print(json.dumps(reply, indent=1) if args.json else "\n".join(lines))


# --------------------------------------------------------------------------------------------------


def push_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="a bundle folder or its .tar.gz (signed with the fleet key)")
    _client_args(p)


def push_run(args: argparse.Namespace) -> int:
    from edgewise.bundle import archive_for

    if not args.bundle.exists():
        raise ConfigError(f"{args.bundle}: no such bundle")
    route = _route(args)  # flags checked before any work
    with tempfile.TemporaryDirectory(prefix="edgewise-push-") as work:
        try:
            archive, _ = archive_for(args.bundle, work)
        except EdgewiseError as exc:
            raise ConfigError(f"{args.bundle}: {exc}") from None
        from edgewise.edge.offload.wire import OffloadFailure

        try:
            reply = route.request("POST", PREFIX + "/bundles", TIMEOUT_S, upload=Path(archive))
        except OffloadFailure as exc:
            raise RegistryClientError(f"registry: {exc}") from None
    state = "stored" if reply.get("new") else "already stored (the same bytes)"
    _print(
        args,
        reply,
        [f"{reply['name']} {reply['version']} ({reply['task']}): {state}, sha256 {reply['sha256']}"],
    )
    return 0


def list_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="only this bundle name")
    _client_args(p)


def list_run(args: argparse.Namespace) -> int:
    import urllib.parse

    query = f"?name={urllib.parse.quote(args.name)}" if args.name else ""
    reply = _call(args, "GET", f"/bundles{query}")
    rows = reply.get("bundles", [])
    lines = [f"{'name':24} {'version':12} {'task':5} {'size':>10}  sha256        key"]
    lines += [
        f"{r['name']:24} {r['version']:12} {r['task']:5} {r['size']:>10}  {r['sha256'][:12]}  {r['key_id'] or 'unsigned'}"
        for r in rows
    ] or ["(no bundles)"]
    _print(args, reply, lines)
    return 0


def promote_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("--fleet", required=True)
    p.add_argument(
        "--device", action="append", help="only these devices (default: every device the fleet store knows)"
    )
    _client_args(p)


def promote_run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "version": args.version}
    if args.device:
        body["devices"] = args.device
    reply = _call(args, "POST", f"/fleets/{args.fleet}/promote", json_body=body)
    lines = [
        f"{args.fleet}: {args.name} {args.version} promoted; deploy sent to {len(reply['sent'])} device(s)"
    ]
    lines += [f"  sent: {d}" for d in reply["sent"]]
    lines += [f"  NOT sent: {d}: {why}" for d, why in reply["failed"].items()]
    _print(args, reply, lines)
    return 0 if not reply["failed"] else 1


def status_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", required=True)
    _client_args(p)


def status_run(args: argparse.Namespace) -> int:
    reply = _call(args, "GET", f"/fleets/{args.fleet}")
    target = reply.get("target")
    lines = [
        f"{args.fleet}: target {target['name']} {target['version']}"
        if target
        else f"{args.fleet}: no promotion"
    ]
    for d in reply.get("devices") or []:
        running = f"{d['running']['name']} {d['running']['version']}" if d["running"] else "-"
        why = f"  ({d['ack']['error']})" if d["ack"] and d["ack"].get("error") else ""
        lines.append(f"  {d['device']:24} {d['state']:8} runs {running}{why}")
    _print(args, reply, lines)
    return 0


def pull_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for NAME-VERSION.tar.gz (default .)")
    p.add_argument("--key", type=Path, help="verify the fleet signature with this public key")
    _client_args(p)


def pull_run(args: argparse.Namespace) -> int:
    from edgewise.bundle import load_bundle, sha256_file
    from edgewise.edge.install import open_signed

    if args.key is not None and not args.key.is_file():
        raise ConfigError(f"--key {args.key}: no such file")
    record = _call(args, "GET", f"/bundles/{args.name}/{args.version}")
    args.out.mkdir(parents=True, exist_ok=True)
    dest = args.out / f"{record['name']}-{record['version']}.tar.gz"
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=args.out) as work:
        part = Path(work) / dest.name
        _call(args, "GET", f"/bundles/{args.name}/{args.version}/archive", download=part)
        got = sha256_file(part)
        if got != record["sha256"]:
            raise RegistryClientError(
                f"{dest.name}: sha256 {got} differs from the registry's {record['sha256']}"
            )
        opener = (
            open_signed(part, args.key, dest.name, tmp_dir=work)
            if args.key
            else load_bundle(part, tmp_dir=work)
        )
        with opener:
            pass  # hashes (and the signature) verified before the file is kept
        os.replace(part, dest)
    _print(
        args,
        {**record, "path": str(dest)},
        [f"{dest}: sha256 verified" + (", signature verified" if args.key else "")],
    )
    return 0
