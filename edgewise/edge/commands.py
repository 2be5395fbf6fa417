"""``edgewise daemon``: run the device daemon, or write its systemd unit."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from edgewise.errors import ConfigError
from edgewise.fsutil import write_text_atomic

UNIT_PATH = Path("/etc/systemd/system/edgewise.service")


def daemon_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        choices=("run", "install-unit"),
        default="run",
        help="run the daemon (default), or write a systemd unit that runs it",
    )
    p.add_argument(
        "--config", type=Path, required=True, help="daemon.yaml: device, install root, mqtt, audio"
    )
    p.add_argument(
        "--user", default=None, help="install-unit: the user the service runs as (default: the profile's)"
    )
    p.add_argument(
        "--out", type=Path, default=UNIT_PATH, help=f"install-unit: where to write it (default {UNIT_PATH})"
    )
    p.add_argument("--print", action="store_true", help="install-unit: print the unit instead of writing it")


def systemd_unit(config: Path, user: str, executable: str, memory_mb: int) -> str:
    """A unit that restarts the daemon on failure, reloads it with SIGHUP and stops it with SIGTERM."""
    command = " ".join(shlex.quote(part) for part in (executable, "daemon", "--config", str(config)))
    return f"""[Unit]
Description=edgewise device daemon ({config})
After=network-online.target sound.target
Wants=network-online.target

[Service]
Type=simple
User={user}
ExecStart={command}
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=5
# the model's budget from the device profile, with room for the runtime and audio buffers
MemoryHigh={memory_mb * 2}M
SupplementaryGroups=audio
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=multi-user.target
"""


def daemon_run(args: argparse.Namespace) -> int:
    from edgewise.edge.daemon import daemon_run as run
    from edgewise.edge.daemon import load_daemon_config

    if args.action == "run":
        return run(args.config)
    from edgewise.devices import load_profile

    cfg, _ = load_daemon_config(args.config)
    profile = load_profile(cfg.device)
    executable = str(Path(sys.argv[0]).resolve()) if Path(sys.argv[0]).name == "edgewise" else "edgewise"
    unit = systemd_unit(
        args.config.resolve(), args.user or profile.service_user, executable, profile.memory_budget_mb
    )
    if args.print:
        print(unit, end="")
        return 0
    try:
        write_text_atomic(args.out, unit)
    except PermissionError:
        raise ConfigError(
            f"{args.out}: permission denied; run as root or pass --out PATH (or --print)"
        ) from None
    print(
        f"wrote {args.out}; enable it with: systemctl daemon-reload && systemctl enable --now {args.out.stem}"
    )
    return 0
