"""``edge-deploy``: the command line (see ``edge-deploy --help`` and :mod:`edgewise.edge.deploy`).

Exit codes: 0 success, 1 internal error (a bug: traceback), 2 a user or device error (one message,
including a failed health check that was rolled back), 130 interrupted. Over ``--host`` the
device's own exit code comes back unchanged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from edgewise import __version__
from edgewise.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, EdgewiseError

PROG = "edge-deploy"
COMMANDS = ("deploy", "rollback", "status", "devices", "broker-acl", "wheelhouse")
ALIASES = {"jetson": "jetson-orin-nano", "rpi": "rpi5", "local": "x86-local"}

DESCRIPTION = """\
Install a bundle on a device, check that it runs, roll back automatically when it does not.

  edge-deploy --list-devices
  edge-deploy --device NAME --root DIR BUNDLE [--key PUB] [--health-timeout S] [--keep N]
  edge-deploy --device NAME --host USER@ADDR BUNDLE            (over ssh)
  edge-deploy --device NAME --host USER@ADDR --bootstrap --key FLEET.pub --fleet F --mqtt-host H ...
  edge-deploy wheelhouse --device NAME --out DIR     (the device's wheels, for --bootstrap --wheelhouse DIR)
  edge-deploy rollback --device NAME (--root DIR | --host USER@ADDR)
  edge-deploy status --device NAME (--root DIR | --host USER@ADDR) [--json]
  edge-deploy devices [--json]
  edge-deploy broker-acl --fleet F [--operator NAME] [--device ID]   (the fleet's Mosquitto users + ACL)

A deploy never installs a version older than one of that name installed before (rollback goes back;
--allow-downgrade overrides), and keeps the newest --keep installs (default 3), pruning the
others and their TensorRT engines (current, previous and last good are always kept).
"""


class Reporter:
    """Progress lines on stdout; a closed pipe (a dropped ssh session) never stops the work."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            self.always(message)

    @staticmethod
    def always(message: str) -> None:
        try:
            print(message, flush=True)
        except BrokenPipeError:
            _silence_stdout()


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------------------------------
# parsers


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only the result and errors")


def _target(p: argparse.ArgumentParser) -> None:
    from edgewise.edge.deploy.ssh import HOST_KEY_CHECKING

    g = p.add_argument_group("device")
    g.add_argument(
        "--device",
        metavar="NAME|FILE.yaml",
        help="device profile: a name from --list-devices (aliases jetson, rpi, local) or a profile YAML",
    )
    g.add_argument("--root", metavar="DIR", help="install root (default: the profile's install_root)")
    s = p.add_argument_group("remote device (ssh)")
    s.add_argument(
        "--host",
        metavar="USER@ADDR",
        help="work on this device over ssh (or a name from 'edge-deploy devices') instead of this machine",
    )
    s.add_argument("--port", type=int, metavar="N", help="ssh port (default 22)")
    s.add_argument(
        "--identity", type=Path, metavar="FILE", help="ssh private key (default: ssh's own choice)"
    )
    s.add_argument(
        "--strict-host-key-checking",
        choices=HOST_KEY_CHECKING,
        default=None,
        help="ssh host key policy (default: what the device was added with, else accept-new: trust a "
        "new device once, refuse a changed key)",
    )
    s.add_argument("--known-hosts", type=Path, metavar="FILE", help="known_hosts file (default: ssh's)")
    s.add_argument(
        "--connect-timeout", type=float, default=10.0, metavar="S", help="ssh connect timeout (default 10)"
    )
    s.add_argument("--device-id", metavar="ID", help="the device's name in the inventory and in MQTT topics")


def _health(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        "--fleet-key",
        dest="key",
        type=Path,
        metavar="PUB",
        help="the fleet's ed25519 public key: the bundle must carry a valid signature "
        "(with --bootstrap: installed on the device, which then accepts only bundles it verifies)",
    )
    p.add_argument(
        "--health-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="how long to wait for the daemon's health report after the switch (default 30)",
    )


def build_parser(command: str) -> argparse.ArgumentParser:
    from edgewise.edge.install import DEFAULT_KEEP

    if command == "deploy":
        p = argparse.ArgumentParser(
            prog=PROG,
            description=DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="Commands: rollback, status, devices, broker-acl, wheelhouse (edge-deploy COMMAND --help).",
        )
        p.add_argument("--version", action="version", version=f"{PROG} (edgewise {__version__})")
        p.add_argument("bundle", nargs="?", metavar="BUNDLE", help="bundle folder or .tar.gz to deploy")
        p.add_argument("--list-devices", action="store_true", help="list the device profiles and exit")
        p.add_argument("--json", action="store_true", help="--list-devices: print JSON")
        p.add_argument(
            "--any-arch",
            action="store_true",
            help="install here even if this machine is not the profile's arch",
        )
        p.add_argument(
            "--allow-downgrade",
            action="store_true",
            help="install a version older than one installed before (normally refused: use rollback to go back)",
        )
        p.add_argument(
            "--keep",
            type=int,
            default=DEFAULT_KEEP,
            metavar="N",
            help=f"installs to keep after the deploy (default {DEFAULT_KEEP}); older ones and their "
            "TensorRT engines are removed; current, previous and last good are always kept",
        )
        _health(p)
        _target(p)
        b = p.add_argument_group("bootstrap (first-time setup of a device over ssh)")
        b.add_argument("--bootstrap", action="store_true", help="set the --host device up for edgewise")
        b.add_argument(
            "--wheel-index", metavar="URL", help="Jetson: extra pip index with onnxruntime-gpu wheels"
        )
        b.add_argument(
            "--edgewise-spec",
            default="edgewise[edge]",
            metavar="SPEC",
            help="what pip installs (default edgewise[edge]); a local wheel path is copied over first",
        )
        b.add_argument(
            "--mqtt-host", metavar="HOST", help="daemon.yaml: MQTT broker (default: a localhost placeholder)"
        )
        b.add_argument(
            "--mqtt-port",
            type=int,
            metavar="N",
            help="daemon.yaml: MQTT port (default 8883 with TLS, 1883 with --mqtt-no-tls)",
        )
        b.add_argument(
            "--mqtt-ca",
            type=Path,
            metavar="PEM",
            help="the broker's CA certificate, installed on the device (default: the device's system CAs)",
        )
        b.add_argument(
            "--mqtt-no-tls",
            action="store_true",
            help="development only: plain MQTT (the device's password then crosses the network in clear)",
        )
        b.add_argument(
            "--fleet", metavar="ID", help="daemon.yaml: fleet id (default: a 'default' placeholder)"
        )
        b.add_argument(
            "--broker-dir",
            type=Path,
            metavar="DIR",
            help="the fleet's Mosquitto password file and ACL, where the device's user is added "
            "(default: broker/FLEET/ beside the device inventory); see edge-deploy broker-acl --help",
        )
        b.add_argument(
            "--insecure-no-key",
            action="store_true",
            help="development only: bootstrap without --key (the daemon then loads unsigned bundles "
            "and refuses every MQTT deploy)",
        )
        b.add_argument(
            "--service-user",
            metavar="USER",
            help="user the systemd unit runs as (default: the --host login user, so deploys can signal it)",
        )
        b.add_argument(
            "--skip-install",
            action="store_true",
            help="no pip installs (venv without pip; config and unit only)",
        )
        b.add_argument(
            "--wheelhouse",
            type=Path,
            metavar="DIR",
            help="install from this folder of the device's wheels (edge-deploy wheelhouse makes it): "
            "copied over, installed with --no-index, so the device needs no network",
        )
        b.add_argument(
            "--compile",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="pip compiles bytecode at install (default: yes, except on a device the inventory marks "
            "emulated, where it costs a minute or two; Python then compiles on first import)",
        )
        b.add_argument("--force-config", action="store_true", help="replace an existing daemon.yaml")
        b.add_argument("--dry-run", action="store_true", help="print the bootstrap steps without connecting")
    elif command == "broker-acl":
        p = build_broker_acl_parser()
    elif command == "wheelhouse":
        p = build_wheelhouse_parser()
    else:
        help_text = {
            "rollback": "switch the device back to its previous good version and check it",
            "status": "what is installed, current, known good and failed; the daemon's last health report",
            "devices": "the devices in the local inventory (bootstrap adds them; deploy and status update them)",
        }[command]
        p = argparse.ArgumentParser(prog=f"{PROG} {command}", description=help_text)
        if command == "rollback":
            _health(p)
        if command in ("status", "devices"):
            p.add_argument("--json", action="store_true", help="print JSON")
        if command != "devices":
            _target(p)
    _common(p)
    return p


# --------------------------------------------------------------------------------------------------
# commands


def list_devices(as_json: bool, say: Reporter) -> int:
    from edgewise.devices import list_profiles, load_profile

    profiles = [load_profile(n) for n in list_profiles()]
    if as_json:
        say.always(json.dumps([p.model_dump() for p in profiles], indent=2))
        return EXIT_OK
    rows = [("NAME", "ARCH", "ACCELERATOR", "PREFERRED RUNTIME", "THREADS", "MEMORY", "INSTALL ROOT")]
    for p in profiles:
        rows.append(
            (
                p.name,
                p.arch,
                p.accelerator,
                p.runtimes[0].describe(),
                str(p.threads),
                f"{p.memory_budget_mb} MB",
                p.install_root,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        say.always("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    say.always("aliases: " + ", ".join(f"{a} = {n}" for a, n in ALIASES.items()))
    return EXIT_OK


def _resolve(args: argparse.Namespace) -> tuple[Any, Any]:
    """(profile, RemoteDevice or None) from --device/--host, filling gaps from the inventory."""
    from edgewise.devices import load_profile
    from edgewise.edge.deploy import DeployError, inventory
    from edgewise.edge.deploy.remote import RemoteDevice
    from edgewise.edge.deploy.ssh import SSHTarget

    # an inventory name, or a recorded USER@ADDR: the record fills what was not given (profile, root,
    # and the SSH options the device was added with: bootstrap, a board)
    where = inventory.resolve(
        args.host, args.port, profile=args.device, root=args.root, device_id=args.device_id
    )
    host, port, device, root, device_id = where.host, where.port, where.profile, where.root, where.device_id
    recorded = where.ssh
    if not device:
        raise DeployError("--device is required (edge-deploy --list-devices shows the names)")
    profile = load_profile(device)
    if not host:
        return profile, None
    target = SSHTarget(
        host,
        port or 22,
        identity=args.identity or _path(recorded.get("identity")),
        host_key_checking=args.strict_host_key_checking
        or recorded.get("strict_host_key_checking", "accept-new"),
        known_hosts=args.known_hosts or _path(recorded.get("known_hosts")),
        connect_timeout=args.connect_timeout,
    )
    passthrough = ["-v"] * min(args.verbose, 2) + (["-q"] if args.quiet else [])
    return profile, RemoteDevice(target, profile, device, root, device_id, passthrough)


def _emulated(dev: Any) -> str | None:
    """The inventory's ``emulated`` note for the device (a board under qemu), if it has one."""
    if dev is None:
        return None
    from edgewise.edge.deploy import inventory

    devices = inventory.load()
    name = inventory.find(devices, dev.target.host, dev.target.port)
    return (devices.get(name or "") or {}).get("emulated") or None


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def ssh_record(args: argparse.Namespace, target: Any) -> dict[str, str]:
    """The SSH options to remember for a device (absolute paths), for the inventory."""
    record = {"strict_host_key_checking": target.host_key_checking}
    if target.identity is not None:
        record["identity"] = str(Path(target.identity).expanduser().resolve())
    if target.known_hosts is not None:
        record["known_hosts"] = str(Path(target.known_hosts).expanduser().resolve())
    return record


def _local_root(args: argparse.Namespace, profile: Any) -> Path:
    return Path(args.root or profile.install_root).expanduser()


def cmd_deploy(args: argparse.Namespace, say: Reporter) -> int:
    from edgewise.edge.deploy import DeployError
    from edgewise.edge.install import DEFAULT_KEEP

    if args.list_devices:
        return list_devices(args.json, say)
    if args.bootstrap:
        return cmd_bootstrap(args, say)
    if not args.bundle:
        raise DeployError("a BUNDLE (folder or .tar.gz) is required; see edge-deploy --help")
    if args.bundle in COMMANDS and not Path(args.bundle).exists():
        raise DeployError(f"put the command first: edge-deploy {args.bundle} --device ...")
    profile, dev = _resolve(args)
    if args.keep < 1:
        raise DeployError(f"--keep {args.keep}: keep at least 1 version")
    if dev is not None:
        from edgewise.edge.deploy import remote

        extra = (["--keep", str(args.keep)] if args.keep != DEFAULT_KEEP else []) + (
            ["--allow-downgrade"] if args.allow_downgrade else []
        )
        return remote.deploy(
            dev,
            Path(args.bundle),
            public_key=args.key,
            health_timeout=args.health_timeout,
            say=say,
            extra_args=extra,  # for the device's own edge-deploy
        )
    from edgewise.edge.deploy import local

    root = _local_root(args, profile)
    res = local.deploy(
        args.bundle,
        profile,
        root,
        public_key=args.key,
        health_timeout=args.health_timeout,
        any_arch=args.any_arch,
        allow_downgrade=args.allow_downgrade,
        keep=args.keep,
        say=say,
    )
    if not res.changed:
        say.always(
            f"{res.key} was already running on {profile.name} at {root}: nothing to do ({res.seconds:.1f} s)"
        )
        return EXIT_OK
    back = f"; previous {res.previous} (edge-deploy rollback returns to it)" if res.previous else ""
    say.always(
        f"deployed {res.key} to {profile.name} at {root} in {res.seconds:.1f} s, "
        f"health confirmed ({res.checked_by}){back}"
    )
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace, say: Reporter) -> int:
    profile, dev = _resolve(args)
    if dev is not None:
        from edgewise.edge.deploy import remote

        return remote.rollback(dev, health_timeout=args.health_timeout, say=say)
    from edgewise.edge.deploy import local

    root = _local_root(args, profile)
    key = local.rollback(profile, root, health_timeout=args.health_timeout, public_key=args.key, say=say)
    say.always(f"rolled back {profile.name} at {root} to {key}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, say: Reporter) -> int:
    from edgewise.edge.deploy import local

    profile, dev = _resolve(args)
    if dev is not None:
        from edgewise.edge.deploy import remote

        info = {**remote.status(dev, say=say), "host": dev.target.host}
    else:
        info = local.status(profile, _local_root(args, profile))
    say.always(json.dumps(info, indent=2) if args.json else local.format_status(info))
    return EXIT_OK


def cmd_devices(args: argparse.Namespace, say: Reporter) -> int:
    from edgewise.edge.deploy import inventory

    devices = inventory.load()
    if args.json:
        say.always(json.dumps(devices, indent=2))
    elif not devices:
        say.always(
            f"no devices yet ({inventory.inventory_path()}): add one with edge-deploy --device NAME --host USER@ADDR --bootstrap"
        )
    else:
        say.always(inventory.format_table(devices))
    return EXIT_OK


def cmd_bootstrap(args: argparse.Namespace, say: Reporter) -> int:
    from edgewise.edge.deploy import DeployError, bootstrap, inventory
    from edgewise.edge.deploy.ssh import SSHSession, check_remote_path
    from edgewise.edge.telemetry.topics import validate_id

    if args.bundle:
        raise DeployError("--bootstrap sets a device up; deploy the bundle afterwards, without --bootstrap")
    if args.fleet:
        validate_id(args.fleet, "--fleet")
    if args.device_id:
        validate_id(args.device_id, "--device-id")
    if args.key is None and not args.insecure_no_key:
        raise DeployError(
            "--bootstrap needs the fleet's public key: --key FLEET.pub (edgewise bundle keygen makes the pair; "
            "the device then accepts only bundles signed with FLEET.key); --insecure-no-key skips it, for development"
        )
    if args.key is not None:
        from edgewise.bundle import public_key_id

        public_key_id(args.key)  # missing, unreadable or not ed25519: refused before the device is touched
    if args.mqtt_ca is not None and not args.mqtt_ca.is_file():
        raise DeployError(f"--mqtt-ca {args.mqtt_ca}: no such file")
    if args.mqtt_ca is not None and args.mqtt_no_tls:
        raise DeployError("--mqtt-ca and --mqtt-no-tls contradict each other: pick one")
    house = None
    if args.wheelhouse is not None:
        from edgewise.edge.deploy.wheelhouse import Wheelhouse

        if args.skip_install:
            raise DeployError("--wheelhouse and --skip-install contradict each other: pick one")
        house = Wheelhouse.open(args.wheelhouse)  # no folder, no wheels, no pip: refused before ssh
    if not args.host and not args.dry_run:
        raise DeployError("--bootstrap needs --host USER@ADDR (the device to set up)")
    profile, dev = _resolve(args)
    root = check_remote_path(args.root or profile.install_root, "install root")
    from edgewise.edge.deploy import broker_acl

    fleet = args.fleet or "default"
    broker_acl.check_id(fleet, "--fleet")
    # --host NAME of a device in the inventory (a board, a re-bootstrap) keeps that name
    device_id = args.device_id or (dev.device_id if dev is not None else None)
    if device_id:
        validate_id(device_id, "--device-id")
        broker_acl.check_id(device_id, "--device-id")
    broker_dir = args.broker_dir or default_broker_dir(fleet)
    opts = bootstrap.BootstrapOptions(
        profile=profile,
        root=root,
        wheel_index=args.wheel_index,
        edgewise_spec=args.edgewise_spec,
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port,
        fleet=args.fleet,
        device_id=device_id,
        # The daemon runs as the user edge-deploy logs in as, unless told otherwise: deploys signal
        # it (SIGHUP) and both write the install root, so a different user needs shared rights.
        service_user=args.service_user or _login_user(dev.target.host if dev is not None else args.host),
        public_key=args.key,
        skip_install=args.skip_install,
        force_config=args.force_config,
        mqtt_tls=not args.mqtt_no_tls,
        mqtt_ca=args.mqtt_ca,
        mqtt_password=broker_acl.generate_password(),
        wheelhouse=house,
        compile=args.compile,
        emulated=_emulated(dev),
    )
    if args.dry_run:
        say.always(f"# probe\n{bootstrap.probe_script(opts)}")
        if note := bootstrap.compile_note(opts):
            say.always(f"# {note}")
        for i, step in enumerate(bootstrap.plan(opts, device_id or "DEVICE-ID"), 1):
            body = step.command
            if step.upload:
                body = f"scp {step.upload[0]} -> {step.upload[1]}"
            elif step.upload_tree:
                folder, remote, files = step.upload_tree
                body = f"tar -C {folder} -cf - {len(files)} files | ssh 'rm -rf {remote} && mkdir -p {remote} && tar -xof - -C {remote}'"
            say.always(f"# [{i}] {step.title}{' (failure tolerated)' if step.tolerate else ''}\n{body}")
        if opts.is_jetson and not opts.wheel_index:
            say.always(f"# note: {bootstrap.NO_JETSON_WHEELS}")
        say.always(
            f"# then: the device's MQTT user {fleet}.DEVICE-ID is added to {broker_dir}/ (passwords, acl)"
        )
        return EXIT_OK

    def check_id(device_id: str) -> None:  # two devices must not share an inventory name or MQTT topics
        rec = inventory.load().get(device_id)
        if rec and (rec.get("host"), rec.get("port", 22)) != (dev.target.host, dev.target.port):
            raise DeployError(
                f"device id {device_id!r} already names {rec.get('host')}:{rec.get('port', 22)} in "
                f"{inventory.inventory_path()}; pass --device-id with another name"
            )

    t0 = time.monotonic()
    with SSHSession(dev.target) as session:
        report = bootstrap.run(session, opts, say, check_id=check_id)
    root = report.facts.get("root") or root
    name = inventory.update(
        device_id or report.device_id,
        dev.target.host,
        dev.target.port,
        profile=profile.name,
        root=root,
        ssh=ssh_record(args, dev.target),
        bootstrapped=round(time.time(), 3),
        last_run={"action": "bootstrap", "ok": True, "ts": round(time.time(), 3), "not_done": report.skipped},
    )
    if report.config_written:
        broker_acl.add_users(broker_dir, fleet, devices={report.device_id: opts.mqtt_password})
        say.always(
            f"broker: user {broker_acl.device_user(fleet, report.device_id)} added to {broker_dir}/ "
            f"(mosquitto.conf: {'; '.join(broker_acl.broker_config_lines(broker_dir))})"
        )
    else:
        say.always(
            f"broker: daemon.yaml was kept, so the device's MQTT login is unchanged ({broker_dir}/ untouched)"
        )
    not_done = f"; not done: {'; '.join(report.skipped)}" if report.skipped else ""
    say.always(
        f"bootstrapped {dev.target.host} as {name} ({profile.name}) at {root} in {time.monotonic() - t0:.1f} s{not_done}\n"
        f"next: edge-deploy --host {name} BUNDLE"
    )
    return EXIT_OK


def build_broker_acl_parser() -> argparse.ArgumentParser:
    from edgewise.edge.deploy import broker_acl

    p = argparse.ArgumentParser(
        prog=f"{PROG} broker-acl",
        description=broker_acl.__doc__.split("\n\n", 1)[0]
        + "\n\nAdds users to a fleet's broker folder and writes the Mosquitto files:\n\n"
        "  DIR/passwords  password_file (hashed, mode 0600)\n"
        "  DIR/acl        acl_file: device FLEET.ID writes only edgewise/FLEET/ID/# and reads only\n"
        "                 edgewise/FLEET/ID/cmd; an operator reads edgewise/FLEET/# and writes\n"
        "                 edgewise/FLEET/+/cmd; anyone else gets nothing\n\n"
        "--bootstrap adds each device it sets up (its password goes into the device's daemon.yaml).\n"
        "A new user's password is printed once; run with no --device/--operator to re-render the ACL.\n"
        "The broker's mosquitto.conf then needs: allow_anonymous false, password_file DIR/passwords,\n"
        "acl_file DIR/acl and use_username_as_clientid true (a device cannot take another's client\n"
        "id; one connection per login) (TLS: a listener 8883 with certfile/keyfile).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--fleet", required=True, metavar="ID", help="the fleet (letters, digits, - and _)")
    p.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="the fleet's broker folder (default: broker/FLEET/ beside the device inventory)",
    )
    p.add_argument(
        "--operator",
        action="append",
        default=[],
        metavar="NAME",
        help="add an operator user (the cloud side: reads the fleet, sends commands); repeatable",
    )
    p.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="ID",
        help="add a device user FLEET.ID by hand (bootstrap does this for you); repeatable",
    )
    p.add_argument("--print", action="store_true", help="also print the ACL")
    return p


def build_wheelhouse_parser() -> argparse.ArgumentParser:
    from edgewise.edge.deploy import wheelhouse

    p = argparse.ArgumentParser(
        prog=f"{PROG} wheelhouse",
        description=wheelhouse.__doc__.split("\n\n", 1)[0]
        + "\n\nDownloads, on this (connected) machine, the wheels of --edgewise-spec and pip for the\n"
        "device's architecture, glibc and CPython (the profile's python_version, or --python), then:\n\n"
        "  edge-deploy --device NAME --host USER@ADDR --bootstrap --wheelhouse DIR ...\n\n"
        "copies them over and installs offline. A local wheel (dist/edgewise-X-py3-none-any.whl[edge])\n"
        "is copied into DIR with its dependencies. DIR's old wheels are replaced.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", required=True, metavar="NAME|FILE.yaml", help="the device profile")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="the wheelhouse folder")
    p.add_argument(
        "--python",
        metavar="X.Y",
        help="the device's CPython version (default: the profile's python_version)",
    )
    p.add_argument(
        "--edgewise-spec",
        default="edgewise[edge]",
        metavar="SPEC",
        help="what the device installs (default edgewise[edge]); a local wheel path is copied in too",
    )
    p.add_argument(
        "--wheel-index",
        metavar="URL",
        help="Jetson: also download onnxruntime-gpu from this extra index (bootstrap installs it from DIR)",
    )
    p.add_argument(
        "--find-links",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="also look for wheels in this folder (repeatable), e.g. an older wheelhouse",
    )
    p.add_argument(
        "--no-index", action="store_true", help="only --find-links folders, no package index (offline)"
    )
    return p


def cmd_wheelhouse(args: argparse.Namespace, say: Reporter) -> int:
    from edgewise.devices import load_profile
    from edgewise.edge.deploy import DeployError, wheelhouse

    profile = load_profile(args.device)
    if args.no_index and not args.find_links:
        raise DeployError("--no-index needs at least one --find-links DIR to download from")
    for link in args.find_links:
        if not link.is_dir():
            raise DeployError(f"--find-links {link}: no such folder")
    house = wheelhouse.build(
        profile,
        args.out,
        args.python,
        args.edgewise_spec,
        wheel_index=args.wheel_index,
        find_links=args.find_links,
        no_index=args.no_index,
        say=say,
    )
    say.always(
        f"{house.folder}: {house.describe()}\n"
        f"next: edge-deploy --device {profile.name} --host USER@ADDR --bootstrap --wheelhouse {house.folder}"
        + (f" --edgewise-spec {args.edgewise_spec}" if args.edgewise_spec != "edgewise[edge]" else "")
    )
    return EXIT_OK


def default_broker_dir(fleet: str) -> Path:
    from edgewise.edge.deploy import inventory

    return inventory.inventory_path().parent / "broker" / fleet


def cmd_broker_acl(args: argparse.Namespace, say: Reporter) -> int:
    from edgewise.edge.deploy import broker_acl

    folder = args.dir or default_broker_dir(args.fleet)
    given, who = broker_acl.add_users(
        folder,
        args.fleet,
        devices=dict.fromkeys(args.device),
        operators=dict.fromkeys(args.operator),
    )
    for user, password in given.items():
        say.always(f"user {user}  password {password}  (shown once: store it where that client runs)")
    say.always(
        f"fleet {who.fleet}: {len(who.devices)} device(s), {len(who.operators)} operator(s) in {folder}\n"
        "mosquitto.conf:\n  " + "\n  ".join(broker_acl.broker_config_lines(folder))
    )
    if args.print:
        say.always((folder / broker_acl.ACL).read_text().rstrip())
    return EXIT_OK


HANDLERS = {
    "deploy": cmd_deploy,
    "rollback": cmd_rollback,
    "status": cmd_status,
    "devices": cmd_devices,
    "broker-acl": cmd_broker_acl,
    "wheelhouse": cmd_wheelhouse,
}


# --------------------------------------------------------------------------------------------------
# entry point


def setup_logging(verbose: int, quiet: bool) -> None:
    level = (
        logging.ERROR
        if quiet
        else logging.DEBUG
        if verbose >= 2
        else logging.INFO
        if verbose
        else logging.WARNING
    )
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("edgewise").setLevel(level)
    if not verbose:  # deploy reports installs, switches and rollbacks itself
        logging.getLogger("edgewise.edge.install").setLevel(logging.ERROR)


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end a run like Ctrl-C does (so a deploy undoes an unchecked switch)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _login_user(host: str | None) -> str | None:
    return host.split("@", 1)[0] if host and "@" in host else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else "deploy"
    if argv and argv[0] == command:
        argv = argv[1:]
    args = build_parser(command).parse_args(argv)
    loggers = [logging.getLogger(n) for n in ("edgewise", "edgewise.edge.install")]
    levels = [lg.level for lg in loggers]
    setup_logging(args.verbose, args.quiet)
    say = Reporter(args.quiet)
    try:
        with _signals_interrupt():
            return int(HANDLERS[command](args, say))
    except EdgewiseError as exc:
        _error(str(exc))
        return EXIT_USER_ERROR
    except OSError as exc:
        if exc.filename is None:
            raise
        _error(f"{exc.filename}: {exc.strerror}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    finally:  # main() may run inside another program (the tests): leave its logging as it was
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _error(message: str) -> None:
    with suppress(BrokenPipeError):
        print(
            f"{PROG}: error: {message}" if message != "interrupted" else f"{PROG}: interrupted",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(main())
