"""Deploy on the device itself: verify, install beside, switch ``current``, health-check, roll back.

A deploy is::

    recover ROOT -> pre-flight (verify, runtime match, budget, arch)
    -> install_bundle (copied aside, fsynced, every artifact this device loads checked against
       the bundle's reference sets into INSTALL/parity.json, renamed)   nothing switched yet;
       refused when every artifact the profile could run fails that check
    -> open the installed copy + one inference (engine cached)    nothing switched yet
    -> activate (one atomic rename of ``current``)
    -> health: SIGHUP the daemon and wait for ROOT/health.json naming the new version,
       or, with no daemon running, open ``current`` in-process and run one inference
    -> ok: done (the daemon marks it good; in-process we do), then prune: keep the newest
       ``keep`` installs (never current, previous or last good) and their TensorRT engines
       failed or timed out: rollback(failed=new), SIGHUP, wait for the old one; exit 2

A version older than any version of that name installed before is refused before anything is
installed (``rollback`` goes back; ``allow_downgrade`` / ``--allow-downgrade`` installs an older
version on purpose); so is the same precedence with other build metadata.

One deploy or rollback at a time holds ``ROOT/deploy.lock`` (a second one is refused, naming the
first one's pid). Interrupts: the switch and the rollback run with SIGINT/SIGTERM/SIGHUP deferred, so ``current`` and
``state.json`` are never left half-updated by a Ctrl-C; an interrupt after the switch but before
the health check passed switches back to what ran before (the deploy is undone) and exits 130.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.bundle import load_bundle
from edgewise.devices import DeviceProfile
from edgewise.edge import install
from edgewise.edge.deploy import DeployError
from edgewise.edge.deploy.preflight import bundle_key, check_arch, check_runtime_match, open_and_test
from edgewise.edge.install import deploy_lock
from edgewise.edge.reference import format_lines, read_device_parity
from edgewise.errors import EdgewiseError

log = logging.getLogger(__name__)

PID_FILE = "daemon.pid"
HEALTH_FILE = "health.json"
ENGINES = install.ENGINES  # ROOT/engines: where the daemon caches TensorRT engines; pre-flight builds there
POLL_S = 0.05

Say = Callable[[str], None]


class HealthCheckFailed(DeployError):
    """The new model did not come up healthy (daemon report, timeout, or in-process check)."""


@dataclass
class DeployResult:
    key: str
    previous: str | None
    seconds: float
    checked_by: str  # "daemon pid N" or "in-process"
    runs: str  # artifact and backend
    changed: bool = True
    pruned: list[str] = dataclasses.field(default_factory=list)  # versions and engines removed


# --------------------------------------------------------------------------------------------------
# interrupts


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends, then raise KeyboardInterrupt if one came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if caught:
        raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------------
# the daemon: pid file, signal, health report


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie (exited, not yet reaped) answers kill(0) but runs nothing
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def daemon_pid(root: Path) -> int | None:
    """The pid of the edgewise daemon serving ``root``, or None when none runs (no or stale pid file)."""
    path = root / PID_FILE
    try:
        pid = int(path.read_text().strip())
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("%s is not a pid; ignoring it", path)
        return None
    if pid <= 0 or not _alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = None
    if cmdline is not None and b"edgewise" not in cmdline:
        log.warning("%s names pid %d, which is not an edgewise daemon: stale pid file", path, pid)
        return None
    try:
        os.kill(pid, 0)
    except PermissionError:
        raise DeployError(
            f"the daemon (pid {pid}) runs as another user; run edge-deploy as that user or as root "
            "so it can tell the daemon to reload"
        ) from None
    return pid


def read_health(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / HEALTH_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def reload_daemon(root: Path, pid: int, key: str, timeout: float, say: Say) -> dict[str, Any]:
    """SIGHUP the daemon and wait for its health report on ``key``; raises HealthCheckFailed.

    Only a report newer than the signal, from this pid, naming ``key`` decides: ``ok`` passes, not
    ok fails. A report on another model (a reload that was already under way) is waited past.
    """
    since = time.time()
    os.kill(pid, signal.SIGHUP)
    say(f"asked the daemon (pid {pid}) to load {key}; waiting up to {timeout:g} s for its health report")
    deadline = time.monotonic() + timeout
    other = None
    while True:
        health = read_health(root)
        if health and float(health.get("ts") or 0) >= since and health.get("pid", pid) == pid:
            if health.get("model") == key:
                if health.get("ok"):
                    return health
                raise HealthCheckFailed(
                    f"the daemon could not load {key}: {health.get('error') or 'no reason given'}"
                )
            other = health
        if not _alive(pid):
            raise HealthCheckFailed(f"the daemon (pid {pid}) exited while loading {key}")
        if time.monotonic() > deadline:
            seen = ""
            if other:
                state_ = "ok" if other.get("ok") else f"failed: {other.get('error')}"
                seen = f"; its last report is on {other.get('model') or 'no model'} ({state_})"
            raise HealthCheckFailed(
                f"no health report on {key} from the daemon (pid {pid}) within {timeout:g} s{seen}"
            )
        time.sleep(POLL_S)


def check_health(
    root: Path, key: str, profile: DeviceProfile, *, timeout: float, public_key: Path | None, say: Say
) -> str:
    """Health of what ``current`` names: through the daemon when one runs, else in-process."""
    pid = daemon_pid(root)
    if pid is not None:
        reload_daemon(root, pid, key, timeout, say)
        return f"daemon pid {pid}"
    say(f"no daemon running ({root / PID_FILE} missing or stale): checking {key} in-process")
    target = install.current_install(root)
    if target is None:
        raise HealthCheckFailed(f"{root}/current does not name an install")
    try:
        info = open_and_test(target, profile, public_key=public_key, engine_dir=root / ENGINES)
    except DeployError as exc:  # WrongRuntime, NoRunnableArtifact... all mean "not healthy" here
        raise HealthCheckFailed(str(exc)) from None
    except Exception as exc:  # an EdgewiseError from the runtime, or anything a broken model raises
        raise HealthCheckFailed(f"{type(exc).__name__}: {exc}") from None
    install.mark_good(root, key)
    say(f"{key} runs in-process: {info['artifact']} with {info['backend']}, {info['inference']}")
    return "in-process"


# --------------------------------------------------------------------------------------------------
# deploy, rollback, status


def deploy(
    bundle_path: str | Path,
    profile: DeviceProfile,
    root: str | Path,
    *,
    public_key: Path | None = None,
    health_timeout: float = 30.0,
    any_arch: bool = False,
    allow_downgrade: bool = False,
    keep: int = install.DEFAULT_KEEP,
    say: Say = print,
) -> DeployResult:
    t0 = time.monotonic()
    root = Path(root).expanduser()
    if keep < 1:
        raise DeployError(f"--keep {keep}: keep at least 1 version")
    check_arch(profile, any_arch=any_arch)
    public_key = device_trusted_key(root, public_key)
    with deploy_lock(root):
        res = _deploy(bundle_path, profile, root, public_key, health_timeout, say, t0, allow_downgrade)
        if res.changed:
            res.pruned = _prune(root, keep, say)
        return res


def device_trusted_key(root: Path, given: Path | None) -> Path | None:
    """The key a deploy verifies with: the device's own (``public_key`` in ``ROOT/daemon.yaml``,
    which bootstrap installs) when it has one, so an operator's ``--key`` cannot stand in for it
    (a bundle the daemon would refuse to load is never installed); without one, ``--key``."""
    import yaml

    from edgewise.bundle import public_key_id

    config = root / "daemon.yaml"
    if not config.is_file():
        return given
    try:
        data = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DeployError(f"{config}: cannot read the device's trusted key from it ({exc})") from None
    trusted = data.get("public_key") if isinstance(data, dict) else None
    if not trusted:
        return given
    trusted_path = Path(str(trusted)).expanduser()
    trusted_id = public_key_id(trusted_path)
    if given is not None and public_key_id(given) != trusted_id:
        raise DeployError(
            f"--key {given} is key {public_key_id(given)}, but this device trusts only key {trusted_id} "
            f"({trusted_path}, public_key in {config}): sign the bundle with the fleet's key"
        )
    return trusted_path


def _prune(root: Path, keep: int, say: Say) -> list[str]:
    try:
        pruned = install.prune(root, keep)
    except (OSError, EdgewiseError) as exc:  # the deploy is done; an old folder left behind is not fatal
        say(f"could not prune old versions (keeping {keep}): {exc}")
        return []
    if pruned:
        say(f"pruned (keeping the newest {keep}): {', '.join(pruned)}")
    return pruned


def _deploy(
    bundle_path: str | Path,
    profile: DeviceProfile,
    root: Path,
    public_key: Path | None,
    health_timeout: float,
    say: Say,
    t0: float,
    allow_downgrade: bool = False,
) -> DeployResult:
    for line in install.recover(root):
        say(f"recovered {root}: {line}")
    with load_bundle(bundle_path, public_key=public_key) as bundle:
        key = bundle_key(bundle)
        signed = ", signature verified" if public_key else ""
        arts = sum(len(m.artifacts) for m in bundle.manifest.models.values())
        say(f"{key}: verified ({arts} artifacts{signed})")
        change = install.check_version(
            root,
            bundle.manifest.name,
            bundle.manifest.version,
            allow_downgrade=allow_downgrade,
            back="edge-deploy rollback returns to the previous good version; --allow-downgrade installs it anyway",
        )
        if change == "downgrade":
            say(f"{key}: older than a version installed before; installing it anyway (--allow-downgrade)")
        choice, art = check_runtime_match(bundle, profile)[0]
        say(f"{key}: {profile.name} prefers {choice.describe()} ({art.path})")
        was_there = (install.models_dir(root) / key).is_dir()
        try:
            install_dir = install.install_bundle(root, bundle.root, public_key=public_key, profile=profile)
        except install.DeviceParityError as exc:
            raise DeployError(str(exc)) from None
    say(f"{key}: {'already installed' if was_there else 'installed'} at {install_dir}")
    for line in format_lines(read_device_parity(install_dir)):
        say(f"{key}: device parity: {line}")
    try:
        info = open_and_test(install_dir, profile, public_key=public_key, engine_dir=root / ENGINES)
    except Exception as exc:
        msg = str(exc) if isinstance(exc, EdgewiseError) else f"{type(exc).__name__}: {exc}"
        raise DeployError(f"{key} does not run on this {profile.name}; current is unchanged: {msg}") from None
    runs = f"{info['artifact']} with {info['backend']}"
    say(f"{key}: runs here: {runs} ({info['inference']})")

    state = install.InstallState.read(root)
    before = install.current_install(root)
    if before == install_dir.resolve() and state.last_good == key and key not in state.failed:
        say(f"{key} is already current and healthy: nothing to switch")
        return DeployResult(key, state.previous, time.monotonic() - t0, "earlier check", runs, changed=False)

    daemon_pid(root)  # a daemon this user cannot signal is an error before anything is switched
    with deferred_interrupts():
        previous = install.activate(root, install_dir)
    say(f"switched current: {previous or '(none)'} -> {key}")
    try:
        checked_by = check_health(root, key, profile, timeout=health_timeout, public_key=public_key, say=say)
    except HealthCheckFailed as exc:
        raise DeployError(
            _roll_back_after(root, key, str(exc), profile, health_timeout, public_key, say)
        ) from None
    except BaseException:  # Ctrl-C, SIGTERM: undo the switch so the device runs what it ran before
        _undo(root, previous, say)
        raise
    return DeployResult(key, previous, time.monotonic() - t0, checked_by, runs)


def _roll_back_after(
    root: Path,
    key: str,
    reason: str,
    profile: DeviceProfile,
    timeout: float,
    public_key: Path | None,
    say: Say,
) -> str:
    """Roll back a failed deploy; returns the error message for the user."""
    say(f"{key} failed its health check: {reason}")
    try:
        with deferred_interrupts():
            back = install.rollback(root, reason=f"health check failed: {reason}", failed=key)
    except install.InstallError:
        return (
            f"{key} failed its health check ({reason}) and there is no earlier version to roll back to; "
            f"current still names {key}"
        )
    say(f"rolled back: current -> {back}")
    pid = daemon_pid(root)
    note = ""
    if pid is not None:
        try:
            reload_daemon(root, pid, back, timeout, say)
            say(f"the daemon runs {back} again")
        except HealthCheckFailed as exc:
            note = f"; the daemon has not confirmed {back} either: {exc}"
    return f"{key} failed its health check: {reason}; rolled back to {back}{note}"


def _undo(root: Path, previous: str | None, say: Say) -> None:
    if previous is None:
        say(
            "interrupted before the health check finished; current stays on the new install (not marked good)"
        )
        return
    with deferred_interrupts():
        install.activate(root, install.models_dir(root) / previous)
    with suppress(DeployError, OSError):
        pid = daemon_pid(root)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
    say(f"interrupted before the health check finished: switched back to {previous}")


def rollback(
    profile: DeviceProfile,
    root: str | Path,
    *,
    health_timeout: float = 30.0,
    public_key: Path | None = None,
    say: Say = print,
) -> str:
    """Switch back to the previous good install and check it; returns its key."""
    root = Path(root).expanduser()
    if not (root / install.STATE).is_file():
        raise DeployError(f"{root}: nothing installed here (no {install.STATE})")
    with deploy_lock(root):
        return _rollback(profile, root, health_timeout, public_key, say)


def _rollback(
    profile: DeviceProfile, root: Path, health_timeout: float, public_key: Path | None, say: Say
) -> str:
    for line in install.recover(root):
        say(f"recovered {root}: {line}")
    before = install.current_install(root)
    with deferred_interrupts():
        back = install.rollback(root, reason="requested")
    say(f"rolled back: current {before.parent.name + '/' + before.name if before else '(none)'} -> {back}")
    try:
        checked_by = check_health(root, back, profile, timeout=health_timeout, public_key=public_key, say=say)
    except HealthCheckFailed as exc:
        raise DeployError(f"rolled back to {back}, but it failed its health check: {exc}") from None
    say(f"{back} is healthy ({checked_by})")
    return back


def status(profile: DeviceProfile | None, root: str | Path) -> dict[str, Any]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DeployError(f"{root}: nothing installed here (no such folder)")
    info = install.status(root)
    pid = daemon_pid(root)
    return {"device": profile.name if profile else None, **info, "daemon_pid": pid}


def format_status(info: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rows = [
        ("device", info.get("device") or "?"),
        ("root", info.get("root")),
        ("current", info.get("current") or "(none)"),
        ("previous", info.get("previous") or "-"),
        ("last good", info.get("last_good") or "-"),
        ("installed", ", ".join(info.get("installed") or []) or "-"),
        ("failed", ", ".join(info.get("failed") or []) or "-"),
        ("daemon", f"running (pid {info['daemon_pid']})" if info.get("daemon_pid") else "not running"),
        ("health", describe_health(info.get("health"), now)),
        *describe_parity(info),
    ]
    return "\n".join(f"{k:<10} {v}" for k, v in rows)


def describe_parity(info: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for the current install's device parity check: one per artifact (max |diff| against
    its tolerance on this machine, and on the exporting machine)."""
    if not info.get("current"):
        return []
    record = info.get("parity")
    if not record:
        return [("parity", "not checked (installed before the device parity check)")]
    head = f"{record.get('summary') or '?'} on {record.get('machine') or '?'}"
    if record.get("profile"):
        head += f" (profile {record['profile']})"
    lines = format_lines(record) if record.get("verdict") != "not checked" else []
    return [("parity", head), *(("", line) for line in lines)]


def describe_health(health: dict[str, Any] | None, now: float | None = None) -> str:
    if not health:
        return "-"
    now = time.time() if now is None else now
    ts = health.get("ts")
    age = f" ({_ago(now - float(ts))} ago)" if isinstance(ts, (int, float)) else ""
    if health.get("ok"):
        return f"ok {health.get('model') or ''}{age}".replace("  ", " ")
    return f"failed {health.get('model') or ''}: {health.get('error') or '?'}{age}".replace("  ", " ")


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"
