"""First-time setup of a device over ssh, as a list of plain shell steps.

:func:`probe_script` asks the device what it is (one round trip); :func:`check_facts` refuses a
device that cannot work (wrong architecture, no Python >= 3.10, not Linux) before anything is
changed; :func:`plan` returns the :class:`Step` list, which tests read without any ssh. Every
step is safe to repeat, so after a failure fix the cause and run ``--bootstrap`` again.

The steps, in order:

1. create ``ROOT/{incoming,models}`` (with ``sudo -n`` when the ssh user cannot, then chown);
2. create ``ROOT/venv`` with the profile's Python; on Jetson profiles ``--system-site-packages``,
   so JetPack's ``tensorrt`` module (apt, not pip) is visible inside the venv; with
   ``--wheelhouse`` (or ``--skip-install``) ``--without-pip``: no ensurepip (slow under emulation,
   missing without Debian's python3-venv);
3. (unless ``--skip-install``) upgrade pip, install ``edgewise[edge]`` (or ``--edgewise-spec``,
   a local wheel is copied over first), and on Jetson with ``--wheel-index URL`` replace the CPU
   onnxruntime with ``onnxruntime-gpu`` from that index (PyPI has no Jetson GPU wheels).
   With ``--wheelhouse DIR`` (:mod:`.wheelhouse`; checked against the device's Python, arch and
   glibc before anything changes) instead: copy DIR's wheels to ``ROOT/incoming/wheels`` in one
   tar stream, install pip and the spec with the wheelhouse's own pip wheel from that folder only
   (``--no-index``: the device needs no network; a local wheel spec found in the wheelhouse is
   installed from there, onnxruntime-gpu too when the wheelhouse has it), then remove the folder.
   Bytecode: pip compiles it at install, except on a device the inventory marks ``emulated`` (a
   board under qemu, where that costs a minute or two) or with ``--no-compile``: Python then
   compiles each module on its first import;
4. report what the venv can run (onnxruntime providers, TensorRT, LiteRT);
5. install the fleet's public key (``--key``/``--fleet-key``) as ``ROOT/keys/<name>``: the daemon
   then loads and accepts (MQTT ``deploy``) only bundles signed with the fleet's private key;
6. install the broker's CA certificate (``--mqtt-ca``) as ``ROOT/keys/mqtt-ca.pem``;
7. write ``ROOT/daemon.yaml`` (mode 0600: it holds the device's MQTT password) from the template,
   kept if it exists unless ``--force-config``: ``public_key``, MQTT over TLS (port 8883; system
   CAs unless ``--mqtt-ca``; ``--mqtt-no-tls`` for a development broker) and the device's own
   username ``FLEET.DEVICE`` with a password generated for it; written through a fresh temporary
   file (a leftover one is removed first: its mode, owner or link is never reused);
8. (only with a ``--service-user`` other than the ssh login user) give ``daemon.yaml`` and
   ``ROOT/keys`` to the service user (as root, or with ``sudo -n``), so the daemon can read its
   0600 config;
9. install the systemd unit with the device's ``edgewise daemon install-unit`` (tolerated: a
   failure is reported, not fatal).

The daemon runs as the ssh login user unless ``--service-user``: that user owns the install root
(step 1), and ``edge-deploy`` signals the daemon and writes the root as that user.

The device is then recorded in the local inventory, and its broker user (the password hashed) is
added to the fleet's broker folder (:mod:`.broker_acl`: ``passwords`` and ``acl`` for Mosquitto).
Without ``--key`` bootstrap refuses, unless ``--insecure-no-key`` (development: a daemon with no
key loads unsigned bundles that edge-deploy installs, and refuses every MQTT ``deploy``).
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgewise.devices import DeviceProfile
from edgewise.edge.deploy import DeployError
from edgewise.edge.deploy.ssh import check_remote_path, shell_path
from edgewise.edge.deploy.wheelhouse import Wheelhouse, make_command, split_spec

MIN_PYTHON = (3, 10)
MQTT_CA = "mqtt-ca.pem"
WRITE_CONFIG = "write daemon.yaml"
KEPT = "kept the existing"
DEFAULT_SPEC = "edgewise[edge]"
NO_JETSON_WHEELS = (
    "PyPI has no onnxruntime GPU wheels for Jetson: without --wheel-index the ONNX fallback runs on the "
    "CPU (TensorRT still comes from JetPack through --system-site-packages). For CUDA onnxruntime pass "
    "--wheel-index with a Jetson wheel index matching the JetPack version"
)


@dataclass(frozen=True)
class Step:
    """One thing to do on the device: a shell line (with optional stdin), a file or files to copy."""

    title: str
    command: str | None = None
    stdin: bytes | None = None
    upload: tuple[Path, str] | None = None  # (local file, remote path)
    upload_tree: tuple[Path, str, tuple[str, ...]] | None = None  # (local folder, remote folder, files)
    tolerate: bool = False  # a failure is reported and the bootstrap goes on


@dataclass(frozen=True)
class BootstrapOptions:
    profile: DeviceProfile
    root: str
    wheel_index: str | None = None
    edgewise_spec: str = DEFAULT_SPEC
    mqtt_host: str | None = None
    mqtt_port: int | None = None  # default: 8883 with TLS, 1883 without
    mqtt_tls: bool = True
    mqtt_ca: Path | None = None  # the broker's CA certificate (default: the device's system CAs)
    mqtt_password: str | None = None  # the device's MQTT password (username FLEET.DEVICE)
    fleet: str | None = None
    device_id: str | None = None
    service_user: str | None = None
    public_key: Path | None = None
    skip_install: bool = False
    force_config: bool = False
    wheelhouse: Wheelhouse | None = None  # install from these wheels only (the device needs no network)
    compile: bool | None = None  # pip's bytecode compile at install; None: yes, unless emulated
    emulated: str | None = None  # the inventory's note for a board under emulation

    @property
    def compile_bytecode(self) -> bool:
        return self.compile if self.compile is not None else not self.emulated

    @property
    def is_jetson(self) -> bool:
        return self.profile.accelerator == "cuda" and self.profile.arch == "aarch64"

    @property
    def user(self) -> str | None:
        """The user the daemon runs as; None: the ssh login user, who owns the install root."""
        return self.service_user

    @property
    def user_shell(self) -> str:
        """:attr:`user` as one shell word (the login user is ``$(id -un)`` on the device)."""
        return shlex.quote(self.service_user) if self.service_user else '"$(id -un)"'

    @property
    def port(self) -> int:
        return self.mqtt_port or (8883 if self.mqtt_tls else 1883)

    @property
    def fleet_id(self) -> str:
        return self.fleet or "default"


# --------------------------------------------------------------------------------------------------
# what the device is


def probe_script(opts: BootstrapOptions) -> str:
    py = shlex.quote(opts.profile.python)
    user = opts.user_shell
    lines = [
        "printf 'os=%s\\n' \"$( (. /etc/os-release && printf '%s' \"$PRETTY_NAME\") 2>/dev/null)\"",
        "printf 'arch=%s\\n' \"$(uname -m)\"",
        f"printf 'python=%s\\n' \"$({py} -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])' 2>/dev/null)\"",
        f"printf 'venv=%s\\n' \"$({py} -c 'import venv, ensurepip' >/dev/null 2>&1 && echo yes || echo no)\"",
        f"printf 'venv_module=%s\\n' \"$({py} -c 'import venv' >/dev/null 2>&1 && echo yes || echo no)\"",
        "printf 'glibc=%s\\n' \"$(getconf GNU_LIBC_VERSION 2>/dev/null)\"",
        "printf 'tegra=%s\\n' \"$(head -n1 /etc/nv_tegra_release 2>/dev/null)\"",
        "printf 'user=%s\\n' \"$(id -un)\"",
        f"printf 'service_user=%s\\n' \"$(id -u {user} >/dev/null 2>&1 && echo yes || echo no)\"",
        "printf 'systemd=%s\\n' \"$(test -d /run/systemd/system && echo yes || echo no)\"",
        "printf 'hostname=%s\\n' \"$(hostname 2>/dev/null)\"",
        f"printf 'root=%s\\n' {shell_path(opts.root)}",
    ]
    return "; ".join(lines)


def parse_facts(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def check_facts(facts: dict[str, str], opts: BootstrapOptions, where: str) -> list[str]:
    """Notes for the user; raises DeployError listing every problem that makes the device unusable."""
    profile, problems, notes = opts.profile, [], []
    if not facts.get("os"):
        problems.append("no /etc/os-release: edgewise devices run Linux")
    arch = facts.get("arch", "")
    if arch != profile.arch:
        hint = (
            " (a 32-bit OS: install the 64-bit one)" if arch == "armv7l" and profile.arch == "aarch64" else ""
        )
        problems.append(
            f"the device is {arch or 'unknown'}, but profile {profile.name} is {profile.arch}{hint}: wrong --device?"
        )
    version = facts.get("python", "")
    try:
        found = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        found = ()
    if not found or found < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        extra = f" ({profile.notes})" if profile.notes else ""
        problems.append(f"{profile.python} is {version or 'missing'}; edgewise needs Python >= {need}{extra}")
    if opts.wheelhouse is not None and not opts.skip_install:  # a venv without ensurepip will do
        if "yes" not in (facts.get("venv"), facts.get("venv_module")):
            problems.append(f"{profile.python} has no venv module: install python3-venv")
    elif facts.get("venv") != "yes" and not opts.skip_install:
        problems.append(
            f"{profile.python} cannot make a venv with pip: install python3-venv (sudo apt install python3-venv)"
        )
    if problems:
        raise DeployError(f"{where} cannot run edgewise as {profile.name}:\n  " + "\n  ".join(problems))
    house = opts.wheelhouse is not None and not opts.skip_install
    if house and (misfit := wheelhouse_problem(opts, version, arch, facts.get("glibc"))):
        raise DeployError(f"{where}: {misfit}")
    if opts.is_jetson and not facts.get("tegra"):
        notes.append("no /etc/nv_tegra_release: is JetPack installed? TensorRT comes from it")
    if opts.is_jetson and not opts.wheel_index:
        notes.append(NO_JETSON_WHEELS)
    if facts.get("service_user") != "yes" and opts.user:
        notes.append(
            f"the service user {opts.user!r} does not exist: create it (sudo useradd --system --groups audio "
            f"{opts.user}) and let it write {facts.get('root') or opts.root} (health.json, state.json)"
        )
    if facts.get("systemd") != "yes":
        notes.append(
            "no systemd on the device: start the daemon yourself (edgewise daemon --config ROOT/daemon.yaml)"
        )
    return notes


def wheelhouse_problem(opts: BootstrapOptions, python: str, arch: str, glibc: str | None) -> str | None:
    """Why ``opts.wheelhouse`` would not install on a device of this Python, arch and glibc (None: fits)."""
    house = opts.wheelhouse
    assert house is not None
    misfits = house.misfits(python, arch, glibc)
    if not misfits:
        return None
    short = ".".join(python.split(".")[:2])
    libc = f", {glibc}" if glibc else ""
    names = ", ".join(misfits[:3]) + (f" and {len(misfits) - 3} more" if len(misfits) > 3 else "")
    return (
        f"the wheelhouse does not fit this device, nothing was changed: {house.folder} has "
        f"{house.describe()}, but the device runs Python {python} on {arch}{libc} ({names} would not "
        f"install there); make one for it: {make_command(opts.profile.name, short, spec=opts.edgewise_spec)}"
    )


def compile_note(opts: BootstrapOptions) -> str | None:
    """Why pip skips the bytecode compile (None: it compiles, the default on a real device)."""
    if opts.skip_install or opts.compile_bytecode:
        return None
    why = (
        f"because the inventory marks this device emulated ({opts.emulated}) and compiling every "
        "module at install costs a minute or two there"
        if opts.emulated and opts.compile is None
        else "as asked (--no-compile)"
    )
    return (
        f"bytecode: pip installs with --no-compile, {why}; Python compiles each module on its first "
        "import instead (--compile: at install)"
    )


# --------------------------------------------------------------------------------------------------
# the plan


def daemon_yaml(
    opts: BootstrapOptions, device_id: str, public_key: str | None = None, mqtt_ca: str | None = None
) -> str:
    """``ROOT/daemon.yaml`` for :class:`edgewise.edge.daemon.DaemonConfig`."""
    from edgewise.edge.deploy.broker_acl import device_user

    data: dict[str, Any] = {"device": opts.profile.name, "root": opts.root}
    if public_key:
        data["public_key"] = public_key
    data["mqtt"] = {
        "host": opts.mqtt_host or "localhost",
        "port": opts.port,
        "fleet": opts.fleet_id,
        "device": device_id,
    }
    if opts.mqtt_password is not None:
        data["mqtt"] |= {"username": device_user(opts.fleet_id, device_id), "password": opts.mqtt_password}
    if opts.mqtt_tls:
        data["mqtt"]["tls"] = {"ca": mqtt_ca} if mqtt_ca else {}
    placeholders = [f"{field_} (--{flag})" for field_, flag, value in (
        ("mqtt.host", "mqtt-host", opts.mqtt_host), ("mqtt.fleet", "fleet", opts.fleet)) if not value]  # fmt: skip
    header = [
        "# edgewise device daemon: written by edge-deploy --bootstrap; edit freely (bootstrap keeps it).",
        "# Mode 0600: mqtt.password is this device's own broker login (its user in the fleet's ACL).",
        "# Fields: edgewise.edge.daemon.DaemonConfig; mqtt: edgewise.edge.telemetry.config.TelemetryConfig;",
        "# audio: defaults to the default microphone with Silero VAD (see AudioInputConfig).",
    ]
    if placeholders:
        header.append(f"# placeholders to fill in: {', '.join(placeholders)}")
    return "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False)


def _install_steps(opts: BootstrapOptions, R: str, house: Wheelhouse | None) -> list[Step]:
    """Copy a local wheel or the wheelhouse, install pip and the spec (and onnxruntime-gpu)."""
    sub = lambda rel: shell_path(f"{R}/{rel}")  # noqa: E731
    arg = lambda spec: shell_path(spec) if spec.startswith("~/") else shlex.quote(spec)  # noqa: E731
    vpy = sub("venv/bin/python")
    pip = f"{vpy} -m pip"
    flags = "-q" + ("" if opts.compile_bytecode else " --no-compile")
    steps: list[Step] = []
    spec_path, extras = split_spec(opts.edgewise_spec)
    spec = opts.edgewise_spec
    wheels = f"{R}/incoming/wheels"
    if house is not None:
        steps.append(
            Step(
                f"copy the wheelhouse ({house.describe()})",
                upload_tree=(house.folder, wheels, tuple(house.files)),
            )
        )
    local = Path(spec_path)
    if local.is_file() and house is not None and local.name in house.files:
        spec = f"{wheels}/{local.name}{extras}"  # the wheelhouse holds it: no copy of its own
    elif local.is_file():  # a local wheel or sdist: copy it over first
        remote = f"{R}/incoming/{local.name}"
        steps.append(Step(f"copy {local.name}", upload=(local, remote)))
        spec = remote + extras
    if house is None:
        steps.append(Step("upgrade pip", f"{pip} install {flags} --upgrade pip"))
        steps.append(Step(f"install {spec}", f"{pip} install {flags} {arg(spec)}"))
    else:
        offline = f"--disable-pip-version-check --no-index --find-links {sub('incoming/wheels')}"
        wheel_pip = f"{vpy} {sub(f'incoming/wheels/{house.pip.filename}/pip')}"
        steps.append(
            Step(
                f"install pip and {spec} from the wheelhouse (no network)",
                f"{wheel_pip} install {flags} {offline} pip {arg(spec)}",
            )
        )
    gpu_wheel = house.find("onnxruntime-gpu") if house is not None else None
    if opts.is_jetson and gpu_wheel is not None:
        steps.append(
            Step(
                "install onnxruntime-gpu from the wheelhouse",
                f"{pip} uninstall -q -y onnxruntime; {pip} install {flags} {offline} onnxruntime-gpu",
            )
        )
    elif opts.is_jetson and opts.wheel_index:
        steps.append(
            Step(
                "install onnxruntime-gpu from the Jetson wheel index",
                f"{pip} uninstall -q -y onnxruntime; "
                f"{pip} install {flags} onnxruntime-gpu --extra-index-url {shlex.quote(opts.wheel_index)}",
            )
        )
    if house is not None:
        steps.append(Step("remove the copied wheelhouse", f"rm -rf {sub('incoming/wheels')}"))
    return steps


def plan(opts: BootstrapOptions, device_id: str = "device") -> list[Step]:
    """The steps that set a device up; root may start with ``~/`` (expanded by the device's shell)."""
    R = opts.root.rstrip("/")
    r = shell_path(R)
    sub = lambda rel: shell_path(f"{R}/{rel}")  # noqa: E731
    py = shlex.quote(opts.profile.python)
    vpy = sub("venv/bin/python")
    steps = [
        Step(
            "create the install root",
            f"mkdir -p {sub('incoming')} {sub('models')} 2>/dev/null || "
            f'(sudo -n mkdir -p {sub("incoming")} {sub("models")} && sudo -n chown -R "$(id -un)" {r})',
        )
    ]
    site = " --system-site-packages" if opts.is_jetson else ""
    house = opts.wheelhouse if not opts.skip_install else None
    if opts.skip_install or house is not None:
        venv = f"test -x {vpy} || {py} -m venv{site} --without-pip {sub('venv')}"
    else:
        venv = f"(test -x {vpy} && test -x {sub('venv/bin/pip')}) || {py} -m venv{site} {sub('venv')}"
    steps.append(
        Step(
            "create the virtual environment"
            + (" (with system site packages: JetPack's TensorRT)" if site else "")
            + (" (without pip: it comes from the wheelhouse)" if house is not None else ""),
            venv,
        )
    )
    if not opts.skip_install:
        steps += _install_steps(opts, R, house)
        check = (
            "import importlib.util as u, sys; import onnxruntime as o; import edgewise.edge.deploy.cli; "
            "print('onnxruntime', o.__version__, o.get_available_providers()); "
            "print('tensorrt', 'yes' if u.find_spec('tensorrt') else 'no'); "
            "print('litert', 'yes' if u.find_spec('ai_edge_litert') else 'no'); "
            "print('torch', 'PRESENT (it should not be)' if 'torch' in sys.modules else 'absent')"
        )
        steps.append(
            Step(
                "check the runtimes",
                f"{vpy} -c {shlex.quote(check)} && test -x {sub('venv/bin/edge-deploy')}",
            )
        )
    remote_key = remote_ca = None
    if opts.public_key is not None:
        remote_key = f"{R}/keys/{Path(opts.public_key).name}"
        steps.append(
            Step(
                "install the fleet's bundle signing key",
                f"mkdir -p {sub('keys')} && cat > {shell_path(remote_key)}",
                stdin=Path(opts.public_key).read_bytes(),
            )
        )
    if opts.mqtt_tls and opts.mqtt_ca is not None:
        remote_ca = f"{R}/keys/{MQTT_CA}"
        steps.append(
            Step(
                "install the MQTT broker's CA certificate",
                f"mkdir -p {sub('keys')} && cat > {shell_path(remote_ca)}",
                stdin=Path(opts.mqtt_ca).read_bytes(),
            )
        )
    config = sub("daemon.yaml")
    tmp = sub(".daemon.yaml.tmp")
    # a fresh temporary file: a leftover one (another mode, owner, or a link) is removed first
    write = f"rm -f {tmp} && (umask 077 && cat > {tmp}) && chmod 600 {tmp} && mv -f {tmp} {config}"
    if not opts.force_config:
        kept = shlex.quote(f"{KEPT} {R}/daemon.yaml (--force-config replaces it)")
        write = f"if [ -e {config} ]; then echo {kept}; else {write}; fi"
    text = daemon_yaml(opts, device_id, remote_key, remote_ca)
    steps.append(Step(WRITE_CONFIG, write, stdin=text.encode()))
    if opts.service_user:
        user = shlex.quote(opts.service_user)
        owned = f"{config}" + (f" {sub('keys')}" if remote_key or remote_ca else "")
        chown = f"chown -R {user} {owned}"
        why = shlex.quote(
            f"daemon.yaml is mode 0600 and the daemon runs as {opts.service_user}: it must own it; "
            "run the bootstrap as root, with passwordless sudo, or without --service-user"
        )
        steps.append(
            Step(
                f"give daemon.yaml{' and keys/' if remote_key or remote_ca else ''} to {opts.service_user}",
                f'if [ "$(id -un)" = {user} ]; then true; elif [ "$(id -u)" -eq 0 ]; then {chown}; '
                f"else sudo -n {chown} || {{ echo {why}; exit 1; }}; fi",
            )
        )
    unit = f"{sub('venv/bin/edgewise')} daemon install-unit --config {config} --user {opts.user_shell}"
    steps.append(
        Step(
            "install the systemd unit",
            f'if [ "$(id -u)" -eq 0 ]; then {unit}; else sudo -n {unit}; fi',
            tolerate=True,
        )
    )
    return steps


@dataclass
class BootstrapReport:
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    device_id: str = ""
    config_written: bool = False  # False: an existing daemon.yaml (and its MQTT login) was kept
    seconds: list[tuple[str, float]] = field(default_factory=list)  # (step title, wall seconds)


def run(
    session: Any, opts: BootstrapOptions, say: Any = print, check_id: Callable[[str], None] | None = None
) -> BootstrapReport:
    """Probe, check, then run :func:`plan` through an open :class:`~edgewise.edge.deploy.ssh.SSHSession`.

    ``check_id`` vets the device id (default: the device's hostname) before anything changes.
    """
    from edgewise.edge.telemetry.topics import validate_id

    where = session.target.label
    res = session.run(probe_script(opts), what="the probe")
    facts = parse_facts(res.stdout)
    say(f"{where}: {facts.get('os') or '?'}, {facts.get('arch') or '?'}, Python {facts.get('python') or '?'}")
    report = BootstrapReport(facts=facts)
    report.notes = check_facts(facts, opts, where)
    if facts.get("root", "").startswith("/"):
        opts = dataclasses.replace(opts, root=check_remote_path(facts["root"], "install root"))
    device_id = opts.device_id or facts.get("hostname") or session.target.address
    report.device_id = validate_id(device_id, "--device-id")
    if check_id is not None:
        check_id(report.device_id)
    steps = plan(opts, report.device_id)
    if note := compile_note(opts):
        say(note)
    for i, step in enumerate(steps, 1):
        say(f"[{i}/{len(steps)}] {step.title}")
        t0 = time.monotonic()
        try:
            if step.upload is not None:
                session.copy(*step.upload)
                continue
            if step.upload_tree is not None:
                folder, remote, files = step.upload_tree
                session.copy_tree(folder, remote, files, replace=True)
                continue
            rc, tail = session.stream(step.command, prefix="    ", stdin=step.stdin, what=step.title)
        finally:
            report.seconds.append((step.title, round(time.monotonic() - t0, 2)))
            if report.seconds[-1][1] >= 1:
                say(f"    ({report.seconds[-1][1]:.1f} s)")
        if rc == 0:
            if step.title == WRITE_CONFIG:
                report.config_written = not any(KEPT in line for line in tail)
            continue
        reason = next((ln.strip() for ln in reversed(tail) if ln.strip()), f"exit {rc}")
        if step.tolerate:
            say(f"    not done: {step.title} failed ({reason}); the rest of the bootstrap went on")
            report.skipped.append(f"{step.title}: {reason}")
            continue
        raise DeployError(
            f"bootstrap of {where} stopped at '{step.title}' (exit {rc}): {reason}; fix it and run "
            "--bootstrap again (every step is safe to repeat)"
        )
    for note in report.notes:
        say(f"note: {note}")
    return report
