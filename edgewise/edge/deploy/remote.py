"""Deploy, roll back and ask for status on a device over ssh.

The laptop side does the cheap pre-flight (the bundle verifies and has an artifact the profile
runs), copies the bundle archive to ``ROOT/incoming/`` (to a ``.part`` name, renamed when complete)
and runs the device's own ``ROOT/venv/bin/edge-deploy`` there, streaming its output with a
``[host]`` prefix and returning its exit code. Everything that touches the install (the runtime
check, a TensorRT engine build, the switch, the daemon's health report, the rollback) happens on
the device, so a dropped connection cannot leave it half-deployed: the device's run goes on to the
end by itself. Afterwards ``edge-deploy status --json`` on the device updates the local inventory.
"""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.bundle import archive_for as bundle_archive_for
from edgewise.bundle import load_bundle
from edgewise.devices import DeviceProfile
from edgewise.edge.deploy import DeployError, inventory
from edgewise.edge.deploy.preflight import bundle_key, check_runtime_match, describe_artifact
from edgewise.edge.deploy.ssh import SSHSession, SSHTarget, check_remote_path, shell_path

Say = Callable[[str], None]


@dataclass
class RemoteDevice:
    target: SSHTarget
    profile: DeviceProfile
    device_arg: str  # what --device said: a profile name, or a local YAML file to copy over
    root: str | None = None  # default: the profile's install_root
    device_id: str | None = None  # the inventory name
    passthrough: Sequence[str] = ()  # -v / -q for the device's edge-deploy

    @property
    def root_spec(self) -> str:
        return check_remote_path(self.root or self.profile.install_root, "install root")


def tool_path(root: str) -> str:
    return f"{root}/venv/bin/edge-deploy"


def probe(session: SSHSession, dev: RemoteDevice) -> tuple[str, bool]:
    """The device's install root as an absolute path, and whether its edge-deploy is installed."""
    script = (
        f"r={shell_path(dev.root_spec)}; printf 'root=%s\\n' \"$r\"; "
        'if [ -x "$r/venv/bin/edge-deploy" ]; then echo tool=yes; else echo tool=no; fi'
    )
    res = session.run(script, what="the first contact")
    facts = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    if res.returncode != 0 or "root" not in facts:
        raise DeployError(
            f"{dev.target.label}: unexpected answer from the device shell: {res.stderr.strip() or res.stdout.strip()}"
        )
    return check_remote_path(facts["root"], "install root"), facts.get("tool") == "yes"


def _require_tool(dev: RemoteDevice, root: str, present: bool) -> str:
    if not present:
        raise DeployError(
            f"{dev.target.host}: {tool_path(root)} not found: bootstrap the device first "
            f"(edge-deploy --device {dev.profile.name} --host {dev.target.host} --bootstrap)"
        )
    return tool_path(root)


def _device_arg(session: SSHSession, dev: RemoteDevice, incoming: str) -> str:
    """A profile name goes as is; a local profile YAML is copied to the device first."""
    path = Path(dev.device_arg)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        remote = f"{incoming}/{dev.profile.name}.yaml"
        session.run(f"mkdir -p {shlex.quote(incoming)}", what="mkdir")
        session.copy(path, remote)
        return remote
    return dev.profile.name


def archive_for(bundle: Path, workdir: Path, say: Say) -> Path:
    """The ``.tar.gz`` to copy (:func:`edgewise.bundle.archive_for`), saying when it had to pack one."""
    archive, packed = bundle_archive_for(bundle, workdir)
    if packed:
        beside = bundle.with_name(f"{bundle.name}.tar.gz")
        say(
            f"packing {bundle} into an archive"
            + (f" ({beside.name} is for another manifest)" if beside.is_file() else "")
        )
    return archive


def _flags(dev: RemoteDevice, device_arg: str, root: str) -> str:
    return " ".join(shlex.quote(a) for a in [*dev.passthrough, "--device", device_arg, "--root", root])


def deploy(
    dev: RemoteDevice,
    bundle: Path,
    *,
    public_key: Path | None = None,
    health_timeout: float = 30.0,
    say: Say = print,
    extra_args: Sequence[str] = (),
) -> int:
    """Pre-flight here, copy the archive, run the device's own ``edge-deploy`` (with ``extra_args``,
    e.g. ``--keep 2``) and pass its output and exit code through."""
    bundle = Path(bundle)
    with load_bundle(bundle, public_key=public_key) as opened:
        key = bundle_key(opened)
        choice, art = check_runtime_match(opened, dev.profile)[0]
    say(f"{key}: verified here; {dev.profile.name} would run {describe_artifact(art)} ({art.path})")
    with tempfile.TemporaryDirectory(prefix="edge-deploy-") as work, SSHSession(dev.target) as session:
        archive = archive_for(bundle, Path(work), say)
        root, present = probe(session, dev)
        tool = _require_tool(dev, root, present)
        incoming = f"{root}/incoming"
        session.run(f"mkdir -p {shlex.quote(incoming)}", what="mkdir")
        device_arg = _device_arg(session, dev, incoming)
        key_arg = ""
        if public_key is not None:
            remote_key = f"{incoming}/{Path(public_key).name}"
            session.copy(Path(public_key), remote_key)
            key_arg = f" --key {shlex.quote(remote_key)}"
        final = f"{incoming}/{archive.name}"
        part = f"{incoming}/.{archive.name}.part"
        size = archive.stat().st_size / 2**20
        say(f"copying {archive.name} ({size:.1f} MB) to {dev.target.host}:{incoming}/")
        session.copy(archive, part)
        command = (
            f"mv -f {shlex.quote(part)} {shlex.quote(final)} && "
            f"{shlex.quote(tool)} {_flags(dev, device_arg, root)} --health-timeout {health_timeout:g}{key_arg}"
            f"{''.join(' ' + shlex.quote(a) for a in extra_args)} "
            f"{shlex.quote(final)}; rc=$?; rm -f {shlex.quote(final)}; exit $rc"
        )
        try:
            rc, _ = session.stream(command, prefix=f"[{dev.target.host}] ", what="the deploy")
        except KeyboardInterrupt:
            say(
                f"interrupted: {dev.target.host} may still finish the deploy on its own; check with edge-deploy status"
            )
            raise
        _record(session, dev, root, tool, device_arg, action=f"deploy {key}", rc=rc, say=say)
    return rc


def rollback(dev: RemoteDevice, *, health_timeout: float = 30.0, say: Say = print) -> int:
    with SSHSession(dev.target) as session:
        root, present = probe(session, dev)
        tool = _require_tool(dev, root, present)
        device_arg = _device_arg(session, dev, f"{root}/incoming")
        command = f"{shlex.quote(tool)} rollback {_flags(dev, device_arg, root)} --health-timeout {health_timeout:g}"
        rc, _ = session.stream(command, prefix=f"[{dev.target.host}] ", what="the rollback")
        _record(session, dev, root, tool, device_arg, action="rollback", rc=rc, say=say)
    return rc


def status(dev: RemoteDevice, *, say: Say = print) -> dict[str, Any]:
    with SSHSession(dev.target) as session:
        root, present = probe(session, dev)
        tool = _require_tool(dev, root, present)
        device_arg = _device_arg(session, dev, f"{root}/incoming")
        info = _remote_status(session, dev, tool, device_arg, root)
        _update_inventory(dev, root, info, last_run=None)
    return info


def _remote_status(
    session: SSHSession, dev: RemoteDevice, tool: str, device_arg: str, root: str
) -> dict[str, Any]:
    res = session.run(f"{shlex.quote(tool)} status {_flags(dev, device_arg, root)} --json", what="status")
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        reason = lines[-1].removeprefix("edge-deploy: error: ") if lines else f"exit {res.returncode}"
        raise DeployError(f"{dev.target.host}: {reason}")
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError:
        raise DeployError(
            f"{dev.target.host}: edge-deploy status gave no JSON: {res.stdout[:200]!r}"
        ) from None


def _update_inventory(
    dev: RemoteDevice, root: str, info: dict[str, Any] | None, last_run: dict[str, Any] | None
) -> str:
    fields: dict[str, Any] = {"profile": dev.profile.name, "root": root, "last_run": last_run}
    if info is not None:
        fields.update(
            installed=info.get("current"), last_good=info.get("last_good"), health=info.get("health")
        )
    return inventory.update(dev.device_id, dev.target.host, dev.target.port, **fields)


def _record(
    session: SSHSession,
    dev: RemoteDevice,
    root: str,
    tool: str,
    device_arg: str,
    *,
    action: str,
    rc: int,
    say: Say,
) -> None:
    run = {"action": action, "ok": rc == 0, "exit_code": rc, "ts": round(time.time(), 3)}
    try:
        info = _remote_status(session, dev, tool, device_arg, root)
    except DeployError as exc:
        say(f"could not read the device's status afterwards: {exc}")
        info = None
    name = _update_inventory(dev, root, info, run)
    if info is not None:
        say(f"{name}: current {info.get('current') or '(none)'} (inventory {inventory.inventory_path()})")
