"""The fleet's Mosquitto access rules: one login per device, each confined to its own topics.

A fleet's broker files live in one folder (``edge-deploy --bootstrap --broker-dir DIR`` adds each
device there; ``edge-deploy broker-acl`` adds operators or devices by hand and re-renders)::

    DIR/passwords   mosquitto password file (user:$7$ PBKDF2-SHA512 hash, as mosquitto_passwd writes)
    DIR/acl         mosquitto acl_file, rendered from the users in DIR/passwords

Users and what the ACL lets them do (``F`` the fleet, ``D`` a device)::

    F.D        device D    write edgewise/F/D/#     read edgewise/F/D/cmd, edgewise/F/D/offload/reply
    NAME       operator    read  edgewise/F/#       write edgewise/F/+/cmd, edgewise/F/+/offload/reply

(``offload`` and ``offload/reply``: a device's requests to the cloud over MQTT and the cloud's
answers, edgewise.edge.offload)

so a device can neither publish as another device nor read another device's commands, and only an
operator (the cloud side) sends commands. The broker's ``mosquitto.conf`` needs, in the listener
the devices use::

    allow_anonymous false
    password_file DIR/passwords
    acl_file DIR/acl
    use_username_as_clientid true

The last pins every connection to its login: Mosquitto replaces the client id a client sends with
its username, so device A connecting with B's client id (``edgewise-F-B``, the daemon's default)
does not take over B's session and knock B offline. The daemon needs nothing for it (its session
is then simply named ``F.D``); one login is one connection, so each operator process needs a login
of its own (``edge-deploy broker-acl --operator NAME``).

Ids here are letters, digits, ``-`` and ``_`` (a device user is ``FLEET.DEVICE``, so a dot would
make two devices' names collide). Plain passwords never touch DIR: they are returned to the caller
once (bootstrap writes the device's into its ``daemon.yaml``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from edgewise.edge.deploy import DeployError
from edgewise.fsutil import write_text_atomic

PASSWORDS = "passwords"
ACL = "acl"
PIN_CLIENT_ID = "use_username_as_clientid true"  # a login cannot take another's client id
PBKDF2_ITERATIONS = 101  # mosquitto 2's default for $7$ hashes
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise DeployError(
            f"{what} {value!r}: broker users need 1-64 letters, digits, '-' or '_' "
            "(the device user is FLEET.DEVICE)"
        )
    return value


def device_user(fleet: str, device: str) -> str:
    """The MQTT username of a device: ``FLEET.DEVICE``."""
    return f"{check_id(fleet, 'fleet')}.{check_id(device, 'device id')}"


def generate_password() -> str:
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A mosquitto ``$7$`` hash (PBKDF2-HMAC-SHA512, 12-byte salt), readable by mosquitto >= 2.0."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"$7${iterations}${b64(salt)}${b64(digest)}"


@dataclass(frozen=True)
class FleetUsers:
    """Who is in a fleet's password file: device ids and operator names."""

    fleet: str
    devices: tuple[str, ...]
    operators: tuple[str, ...]


def render_acl(
    fleet: str, devices: list[str] | tuple[str, ...], operators: list[str] | tuple[str, ...]
) -> str:
    """The mosquitto ``acl_file`` text for one fleet (rules per user; nothing for anyone else)."""
    check_id(fleet, "fleet")
    base = f"edgewise/{fleet}"
    lines = [
        f"# edgewise fleet {fleet}: written by edge-deploy (edgewise.edge.deploy.broker_acl); re-rendered",
        "# from the users in the password file beside it, so edit that (edge-deploy broker-acl), not this.",
        "",
    ]
    for name in sorted(operators):
        lines += [
            f"# operator {name}: reads the whole fleet, sends commands",
            f"user {check_id(name, 'operator')}",
            f"topic read {base}/#",
            f"topic write {base}/+/cmd",
            f"topic write {base}/+/offload/reply",
            "",
        ]
    for device in sorted(devices):
        lines += [
            f"# device {device}: publishes only under its own prefix, reads only its own commands",
            f"user {device_user(fleet, device)}",
            f"topic write {base}/{device}/#",
            f"topic read {base}/{device}/cmd",
            f"topic read {base}/{device}/offload/reply",
            "",
        ]
    return "\n".join(lines)


def read_password_file(path: Path) -> dict[str, str]:
    """``{user: hash}`` from a mosquitto password file (missing file: empty)."""
    if not path.is_file():
        return {}
    users: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not hashed:
            raise DeployError(f"{path}:{n}: not a mosquitto password line (user:hash)")
        users[user] = hashed
    return users


def _write_private(path: Path, text: str) -> None:
    write_text_atomic(path, text)
    os.chmod(path, 0o600)


def fleet_users(fleet: str, users: dict[str, str]) -> FleetUsers:
    prefix = f"{fleet}."
    devices = tuple(sorted(u[len(prefix) :] for u in users if u.startswith(prefix)))
    operators = tuple(sorted(u for u in users if "." not in u))
    return FleetUsers(fleet, devices, operators)


def add_users(
    folder: str | os.PathLike,
    fleet: str,
    *,
    devices: dict[str, str | None] | None = None,
    operators: dict[str, str | None] | None = None,
    replace: bool = True,
) -> tuple[dict[str, str], FleetUsers]:
    """Add (or replace) users in ``folder/passwords`` and re-render ``folder/acl``.

    ``devices`` and ``operators`` map a name to its password, or None to generate one. Returns the
    plain passwords of the users added (``{username: password}``, to hand over once) and who is in
    the fleet now. With ``replace=False`` an existing user keeps its password and is not returned.
    """
    check_id(fleet, "fleet")
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / PASSWORDS
    users = read_password_file(path)
    wanted = {device_user(fleet, d): p for d, p in (devices or {}).items()}
    wanted |= {check_id(o, "operator"): p for o, p in (operators or {}).items()}
    given: dict[str, str] = {}
    for user, password in wanted.items():
        if user in users and not replace:
            continue
        password = password or generate_password()
        users[user] = hash_password(password)
        given[user] = password
    _write_private(path, "".join(f"{u}:{h}\n" for u, h in users.items()))
    who = fleet_users(fleet, users)
    _write_private(folder / ACL, render_acl(fleet, who.devices, who.operators))
    return given, who


def broker_config_lines(folder: str | os.PathLike) -> list[str]:
    """The ``mosquitto.conf`` lines (for the devices' listener) that use a fleet folder's files and
    pin each connection to its login (``use_username_as_clientid``), and send packets at once."""
    folder = Path(folder).expanduser().resolve()
    return [
        "allow_anonymous false",
        f"password_file {folder / PASSWORDS}",
        f"acl_file {folder / ACL}",
        PIN_CLIENT_ID,
        # MQTT packets are small: without it Nagle's algorithm holds them for delayed ACKs (a
        # command's round trip 68 ms instead of 1.5 ms here; edgewise's clients set TCP_NODELAY too)
        "set_tcp_nodelay true",
    ]
