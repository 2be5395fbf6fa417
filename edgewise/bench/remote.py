"""``edgewise bench --device NAME --host user@addr``: the same benchmark, run on the device over ssh.

The bundle is verified here first, its archive copied with scp to a fresh temporary folder on the
device (``mktemp -d``), and the device's own edgewise runs the benchmark there
(``python -m edgewise.bench ARCHIVE --out TMP/out --device NAME --no-plots ...``, its output
streamed with a ``[host]`` prefix). Its bench.json comes back over the same connection; this
machine writes bench.md and the plots from it, labelled with the device. The temporary folder is
removed on the device afterwards.

The transport is :mod:`edgewise.edge.deploy.ssh` (the system ssh/scp, one multiplexed
connection, ``BatchMode``): a host that cannot be reached is one line,
``cannot reach pi@10.0.0.7:22: Connection refused``.

``--host`` may name a device of the inventory (``edge-deploy`` bootstrap, ``edgewise board``): its
address, port, SSH options and profile come from the record (:func:`inventory.resolve`), and explicit
flags win.

Whether the figures are emulated is decided on the device: its bench reads ``/etc/edgewise-emulated``
(an emulated board's marker) into the report's ``emulated``; this machine only draws what the report
says.

The device's Python: ``--remote-python``, else ``ROOT/venv/bin/python`` (the venv edge-deploy's
bootstrap makes under the profile's install root) when it exists, else the profile's ``python``.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgewise.bench.schema import validate_report
from edgewise.bundle import archive_for, load_bundle
from edgewise.devices import DeviceProfile
from edgewise.errors import EdgewiseError

Say = Callable[[str], None]


def remote_python_script(profile: DeviceProfile, remote_python: str | None) -> str:
    """Shell that sets ``$py`` to the device's Python."""
    from edgewise.edge.deploy.ssh import shell_path

    if remote_python:
        return f"py={shlex.quote(remote_python)}"
    venv = shell_path(f"{profile.install_root.rstrip('/')}/venv/bin/python")
    return f'py={venv}; [ -x "$py" ] || py={shlex.quote(profile.python)}'


def run_remote(
    *,
    bundle: Path,
    profile: DeviceProfile,
    device_arg: str,
    host: str,
    port: int = 22,
    identity: Path | None = None,
    known_hosts: Path | None = None,
    host_key_checking: str = "accept-new",
    inventory_name: str | None = None,
    key: Path | None = None,
    remote_python: str | None = None,
    passthrough: Sequence[str] = (),
    say: Say = print,
) -> dict[str, Any]:
    """Benchmark ``bundle`` on the device; returns the device's report, labelled with it."""
    from edgewise.edge.deploy import DeployError
    from edgewise.edge.deploy.ssh import SSHSession, SSHTarget, check_remote_path

    try:
        target = SSHTarget(
            host, port=port, identity=identity, known_hosts=known_hosts, host_key_checking=host_key_checking
        )
    except DeployError as exc:
        raise EdgewiseError(str(exc)) from None
    with load_bundle(bundle, public_key=key) as opened:  # a bad bundle fails here, before any copy
        name = f"{opened.manifest.name}-{opened.manifest.version}"
    try:
        with tempfile.TemporaryDirectory(prefix="edgewise-bench-") as work, SSHSession(target) as session:
            archive, _ = archive_for(Path(bundle), Path(work))
            made = session.run('mktemp -d "${TMPDIR:-/tmp}/edgewise-bench.XXXXXX"', what="mktemp")
            remote_dir = check_remote_path(made.stdout.strip(), "remote temporary folder")
            if made.returncode != 0 or not remote_dir:
                raise EdgewiseError(f"{target.label}: cannot make a temporary folder: {made.stderr.strip()}")
            try:
                report, rc, tail = _bench_there(
                    session,
                    target,
                    remote_dir,
                    archive,
                    profile,
                    device_arg,
                    key,
                    remote_python,
                    passthrough,
                    say,
                )
            finally:
                session.run(f"rm -rf {shlex.quote(remote_dir)}", what="cleanup")
    except DeployError as exc:
        hint = "" if inventory_name or "@" in host else f" ({host} is not a device in the inventory either)"
        raise EdgewiseError(f"{exc}{hint}") from None
    if report is None:
        raise EdgewiseError(f"{target.label}: edgewise bench failed on the device (exit {rc}): {tail}")
    where = f"{inventory_name}, {target.host}" if inventory_name else target.host
    report["device"] = {"name": profile.name, "host": target.label, "label": f"{profile.name} ({where})"}
    report["notes"] = [n for n in report.get("notes", []) if not n.startswith("plots not drawn")]
    report["notes"].append(f"measured on {target.label} over ssh; bundle {name} copied as {archive.name}")
    return report


def _bench_there(
    session: Any,
    target: Any,
    remote_dir: str,
    archive: Path,
    profile: DeviceProfile,
    device_arg: str,
    key: Path | None,
    remote_python: str | None,
    passthrough: Sequence[str],
    say: Say,
) -> tuple[dict[str, Any] | None, int, str]:
    remote_archive = f"{remote_dir}/{archive.name}"
    say(f"copying {archive.name} ({archive.stat().st_size / 2**20:.1f} MB) to {target.host}:{remote_dir}/")
    session.copy(archive, remote_archive)
    device = device_arg
    if Path(device_arg).suffix in (".yaml", ".yml") and Path(device_arg).is_file():
        device = f"{remote_dir}/{profile.name}.yaml"
        session.copy(Path(device_arg), device)
    argv = [remote_archive, "--out", f"{remote_dir}/out", "--device", device, "--no-plots", *passthrough]
    if key is not None:
        session.copy(Path(key), f"{remote_dir}/key.pub")
        argv += ["--key", f"{remote_dir}/key.pub"]
    command = f'{remote_python_script(profile, remote_python)}; "$py" -m edgewise.bench ' + " ".join(
        shlex.quote(a) for a in argv
    )
    rc, lines = session.stream(command, prefix=f"[{target.host}] ", what="the benchmark")
    tail = next((ln for ln in reversed(lines) if ln.strip()), "no output")
    fetched = session.run(f"cat {shlex.quote(remote_dir)}/out/bench.json", what="reading bench.json")
    if fetched.returncode != 0:
        return None, rc, tail
    try:
        report = json.loads(fetched.stdout)
        validate_report(report)
    except ValueError as exc:  # json and pydantic errors are both ValueErrors
        raise EdgewiseError(f"{target.label}: the device's bench.json is not a valid report: {exc}") from None
    if rc != 0 and report["bundle"]["verified"]:
        return None, rc, tail
    return report, rc, tail
