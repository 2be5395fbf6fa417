"""What an emulated board costs and shows: the figures issue 12 asks for, measured in one run.

An emulated Raspberry Pi 5 (``edgewise board``: Debian bookworm arm64 under qemu-user, SSH on
loopback) is created, started, bootstrapped and deployed to the way a user does it, with the
real commands, timed from here:

* rootfs build (cold: ``--cold`` builds into a fresh cache; otherwise the time the cached build
  recorded), board create and start from the cached rootfs, stop, start again;
* ``edge-deploy wheelhouse`` and ``edge-deploy --bootstrap --wheelhouse`` (per step), the installed
  size on the board (the venv and one install);
* ``edge-deploy --host`` of a signed bundle, whose install checks every artifact against its
  reference set on aarch64; the same check here on x86_64 (``python -m edgewise.edge.reference``)
  and the export's own, side by side: max |logit difference| per artifact;
* the daemon on the board logged in to a Mosquitto on the host over TLS: start to model loaded, an
  MQTT ``infer``, and its resident memory (VmRSS/VmHWM, which include qemu's translator);
* the board tests the suite runs (``pytest tests/board``), each with its time.

Timings under qemu are the emulator's, not a Pi's; memory, sizes and correctness hold. Writes
``OUT/board_report.{json,md}`` and ``OUT/board_parity.png``::

    .venv/bin/python benchmarks/board_report.py --bundle demo-out/bundles/ser-tiny-1.0.0.tar.gz \\
        --key demo-out/keys/fleet.pub --out benchmarks/results
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from report_files import write_report

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROOT = "/opt/edgewise"
FLEET, DEVICE = "report", "rb1"


def timed(argv: list, *, timeout: float = 900, env: dict | None = None) -> tuple[float, str]:
    """Run a command, echo it; (seconds, stdout). A failure stops the report with its output."""
    argv = [str(a) for a in argv]
    print("$ " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(argv)}\n{result.stdout}{result.stderr}")
    return seconds, result.stdout


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1e6


def rootfs_figures(cold: bool) -> dict:
    from edgewise.board.rootfs import STAMP, RootfsSpec, build_rootfs, cache_dir

    spec = RootfsSpec()
    if cold:
        with tempfile.TemporaryDirectory(prefix="board-report-cache-", dir=cache_dir().parent) as tmp:
            os.environ["EDGEWISE_BOARD_CACHE"] = tmp
            try:
                t0 = time.perf_counter()
                path = build_rootfs(spec)
                seconds = time.perf_counter() - t0
                size = du_mb(path)
            finally:
                os.environ.pop("EDGEWISE_BOARD_CACHE")
        return {"cold_build_s": round(seconds, 1), "size_mb": round(size), "measured": "in this run"}
    path = build_rootfs(spec)  # the cached one (built now if missing)
    stamp = json.loads((path / STAMP).read_text())
    return {
        "cold_build_s": round(stamp["seconds"], 1),
        "size_mb": round(du_mb(path)),
        "measured": "recorded by the build that made the cache "
        + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp["built"])),
    }


def parity_table(bundle_dir: Path, board_parity: dict, x86_parity: dict, max_parity: dict) -> list[dict]:
    from edgewise.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    rows = []
    for model in bundle.manifest.models.values():
        for art in model.artifacts:
            ref = art.extra.get("reference")
            if not ref:
                continue
            board = board_parity["artifacts"].get(art.path, {})
            here = x86_parity["artifacts"].get(art.path, {})
            export = ref.get("export_check") or {}
            rows.append(
                {
                    "artifact": art.path,
                    "format": art.format,
                    "precision": art.precision,
                    "tolerance": board.get("tolerance"),
                    "export_max_abs_diff": export.get("max_abs_diff"),
                    "x86_max_abs_diff": here.get("max_abs_diff"),
                    "aarch64_max_abs_diff": board.get("max_abs_diff"),
                    "aarch64_status": board.get("status"),
                    "aarch64_max_cpu_max_abs_diff": max_parity["artifacts"]
                    .get(art.path, {})
                    .get("max_abs_diff"),
                    "aarch64_max_cpu_status": max_parity["artifacts"].get(art.path, {}).get("status"),
                    "aarch64_runtime": board.get("runtime"),
                    "x86_runtime": here.get("runtime"),
                    "aarch64_top1": board.get("top1_agreement"),
                }
            )
    return rows


class Operator:
    """The fleet's operator over TLS: sends the device a command and waits for its ack."""

    def __init__(self, broker, password: str, ca: Path) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self.acks: dict[str, dict] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="operator")
        self.client.username_pw_set("operator", password)
        self.client.tls_set(ca_certs=str(ca))
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            f"edgewise/{FLEET}/{DEVICE}/cmd/ack", qos=1
        )
        self.client.connect(broker.host, broker.tls_port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        ack = json.loads(message.payload)
        with self.cond:
            self.acks[ack.get("id")] = ack
            self.cond.notify_all()

    def command(self, action: str, args: dict, timeout: float = 120.0) -> dict:
        cmd_id = f"{action}-{time.monotonic_ns()}"
        payload = json.dumps({"id": cmd_id, "action": action, "args": args})
        self.client.publish(f"edgewise/{FLEET}/{DEVICE}/cmd", payload, qos=1).wait_for_publish(10)
        with self.cond:
            if not self.cond.wait_for(lambda: cmd_id in self.acks, timeout):
                raise SystemExit(f"no ack for {action} within {timeout} s")
            return self.acks[cmd_id]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def daemon_figures(board, fleet_dir: Path, broker_dir: Path, tls: tuple, tls_port: int) -> dict:
    """The daemon on the board (TLS to the host's broker): start to model loaded, an infer, RSS."""
    import yaml

    from edgewise.devtools.mosquitto import MosquittoBroker
    from edgewise.edge.deploy.local import daemon_pid, read_health

    wav = fleet_dir / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "The board hears this sentence."], check=True)
    root = board.rootfs / ROOT.lstrip("/")
    config = root / "daemon.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["audio"] = {"source": "stdin"}  # no microphone: commands only
    config.write_text(yaml.safe_dump(settings))
    operator_pw = json.loads((fleet_dir / "operator.json").read_text())["password"]
    with MosquittoBroker.for_fleet(broker_dir, tls=tls, tls_port=tls_port) as broker:
        operator = Operator(broker, operator_pw, tls[0])
        argv = board.target().ssh_argv(f"exec {ROOT}/venv/bin/edgewise daemon --config {ROOT}/daemon.yaml")
        t0 = time.perf_counter()
        with open(fleet_dir / "daemon.log", "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=log)
        try:
            while not ((h := read_health(root)) and h.get("ok") and h.get("model")):
                if proc.poll() is not None or time.perf_counter() - t0 > 300:
                    raise SystemExit(
                        f"the daemon on the board did not load: {(fleet_dir / 'daemon.log').read_text()}"
                    )
                time.sleep(0.2)
            loaded_s = time.perf_counter() - t0
            pid = daemon_pid(root)
            t1 = time.perf_counter()
            ack = operator.command("infer", {"wav_b64": base64.b64encode(wav.read_bytes()).decode()})
            infer_s = time.perf_counter() - t1
            status = Path(f"/proc/{pid}/status").read_text()
            mem = {
                k: int(line.split()[1]) / 1024
                for line in status.splitlines()
                for k in ("VmRSS", "VmHWM")
                if line.startswith(k + ":")
            }
        finally:
            board.ssh(f"kill -TERM $(cat {ROOT}/daemon.pid)", check=False)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            operator.close()
    return {
        "start_to_model_loaded_s": round(loaded_s, 1),
        "infer_ack_s": round(infer_s, 2),
        "infer_ok": bool(ack.get("ok")),
        "infer_label": (ack.get("result") or {}).get("label"),
        "model": h.get("model"),
        "vm_rss_mb": round(mem["VmRSS"], 1),
        "vm_hwm_mb": round(mem["VmHWM"], 1),
    }


def board_tests(out_xml: Path) -> dict:
    """The suite's board tests, as CI runs them (their own boards, the cached rootfs)."""
    t0 = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/board",
            f"--junitxml={out_xml}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - t0
    tests = []
    for case in ET.parse(out_xml).getroot().iter("testcase"):
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else "passed"
        if case.find("skipped") is not None:
            outcome = "skipped"
        tests.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "seconds": round(float(case.get("time")), 1),
                "outcome": outcome,
            }
        )
    return {
        "wall_s": round(wall, 1),
        "exit": result.returncode,
        "tests": tests,
        "tail": result.stdout.strip().splitlines()[-1:],
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [r["artifact"].removeprefix("models/") for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (key, name) in enumerate(
        (
            ("export_max_abs_diff", "export (x86_64)"),
            ("x86_max_abs_diff", "device check, x86_64"),
            ("aarch64_max_abs_diff", "aarch64 board, Cortex-A76"),
            ("aarch64_max_cpu_max_abs_diff", "aarch64 board, qemu max CPU"),
        )
    ):
        values = [max(r[key] or 0.0, 1e-9) for r in rows]
        ax.bar(x + (i - 1.5) * 0.2, values, 0.2, label=name)
    ax.scatter(
        x, [r["tolerance"] for r in rows], marker="_", s=600, color="black", label="tolerance", zorder=3
    )
    ax.set_yscale("log")
    ax.set_xticks(x, labels, rotation=15, fontsize=8)
    ax.set_ylabel("max |logit difference| vs PyTorch")
    ax.set_title("Reference-set check per artifact: x86_64 vs aarch64 (emulated board)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(report: dict) -> str:
    r = report
    lines = [
        "# Emulated board report",
        "",
        f"An emulated {r['profile']} (Debian bookworm arm64 under qemu-user {r['environment']['qemu']}, SSH on loopback) "
        f"on {r['environment']['host']}. Timings are the emulator's, not a Pi's; memory, sizes and correctness hold.",
        f"Command: `{r['command']}` ({r['date']}).",
        "",
        "## Board life cycle",
        "",
        "| what | seconds |",
        "|---|---:|",
        f"| rootfs build, cold (debootstrap; {r['rootfs']['measured']}) | {r['rootfs']['cold_build_s']} |",
        f"| board create from the cached rootfs ({r['rootfs']['size_mb']} MB copied) | {r['lifecycle']['create_cached_s']} |",
        f"| start (sshd, first login answers aarch64) | {r['lifecycle']['start_s']} |",
        f"| stop | {r['lifecycle']['stop_s']} |",
        f"| start again | {r['lifecycle']['restart_s']} |",
        "",
        "## Setting the board up",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| `edge-deploy wheelhouse` ({r['setup']['wheels']} wheels, {r['setup']['wheelhouse_mb']} MB) | {r['setup']['wheelhouse_s']} s |",
        f"| `edge-deploy --bootstrap --wheelhouse` | {r['setup']['bootstrap_s']} s |",
        f"| installed size on the board: venv | {r['setup']['venv_mb']} MB |",
        f"| installed size on the board: the bundle's install | {r['setup']['install_mb']} MB |",
        f"| `edge-deploy --host` of the signed bundle (verify, copy, check every artifact on aarch64, switch) | {r['setup']['deploy_s']} s |",
        "",
        "## The daemon on the board",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| start to model loaded ({r['daemon']['model']}) | {r['daemon']['start_to_model_loaded_s']} s |",
        f"| MQTT `infer` (TLS to the host's broker), command to ack | {r['daemon']['infer_ack_s']} s |",
        f"| resident memory after the infer, VmRSS (peak VmHWM) | {r['daemon']['vm_rss_mb']} MB ({r['daemon']['vm_hwm_mb']} MB) |",
        "",
        "Resident memory includes qemu-user's translator and translated code, so a Pi's figure is lower.",
        "",
        "## Parity per artifact: aarch64 against x86_64",
        "",
        "Max |logit difference| against the merged PyTorch model's logits on each artifact's reference set "
        "(3 inputs), computed by export on x86_64, by the device check on x86_64 "
        "(`python -m edgewise.edge.reference`), and by the device check on the board at install "
        "(`edge-deploy status --json`, key `parity`), the board running as the Pi 5's Cortex-A76 "
        "(the rpi5 profile's `qemu_cpu`). The last two columns run the same check on the board as qemu's "
        "default `max` CPU (SVE2 and i8mm, which no Pi has): its int8 kernels are another code path.",
        "",
        "| artifact | tolerance | export (x86_64) | x86_64 | aarch64, board's Cortex-A76 | verdict | aarch64 runtime "
        "| aarch64, qemu `max` CPU | verdict |",
        "|---|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for p in r["parity"]:
        f = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
        lines.append(
            f"| `{p['artifact']}` | {f(p['tolerance'])} | {f(p['export_max_abs_diff'])} | {f(p['x86_max_abs_diff'])} "
            f"| {f(p['aarch64_max_abs_diff'])} | {p['aarch64_status']} | {p['aarch64_runtime'] or '-'} "
            f"| {f(p['aarch64_max_cpu_max_abs_diff'])} | {p['aarch64_max_cpu_status']} |"
        )
    lines += ["", "![parity](board_parity.png)", ""]
    t = r.get("board_tests")
    if t:
        lines += [
            "## Board tests in the suite (`pytest tests/board`)",
            "",
            f"{len(t['tests'])} tests, {t['wall_s']} s wall (exit {t['exit']}): {' '.join(t['tail'])}",
            "",
            "| test | seconds | outcome |",
            "|---|---:|---|",
        ]
        lines += [f"| `{x['test']}` | {x['seconds']} | {x['outcome']} |" for x in t["tests"]]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--bundle",
        type=Path,
        default=REPO / "demo-out" / "bundles",
        help="a signed bundle archive (default: the demo's)",
    )
    ap.add_argument(
        "--key", type=Path, default=REPO / "demo-out" / "keys" / "fleet.pub", help="the key it is signed with"
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--cold", action="store_true", help="also build a rootfs from scratch (about 5 minutes)")
    ap.add_argument("--skip-tests", action="store_true", help="do not run pytest tests/board")
    args = ap.parse_args()
    bundle = args.bundle
    if bundle.is_dir():
        bundle = next(iter(sorted(bundle.glob("*.tar.gz"))), bundle)
    if not bundle.is_file() or not args.key.is_file():
        raise SystemExit(
            f"need a signed bundle archive and its public key: {bundle}, {args.key} (run scripts/demo.sh first)"
        )

    from edgewise.bundle import load_bundle
    from edgewise.devtools.mosquitto import free_port
    from edgewise.devtools.tls import self_signed_cert
    from edgewise.edge.deploy.broker_acl import add_users

    work = Path(tempfile.mkdtemp(prefix="board-report-"))
    os.environ["EDGEWISE_BOARDS"] = str(work / "boards")
    os.environ["EDGEWISE_INVENTORY"] = str(work / "devices.json")
    qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout.split(
        "\n"
    )[0]
    report: dict = {
        "profile": "rpi5",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "benchmarks/board_report.py " + " ".join(sys.argv[1:]),
        "environment": {
            "host": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "qemu": qemu.split("version", 1)[1].split()[0] if "version" in qemu else "?",
        },
        "bundle": bundle.name,
        "emulated": "emulated under qemu-user: timings are the emulator's",
    }
    from edgewise.board.board import create_board

    report["rootfs"] = rootfs_figures(args.cold)
    t0 = time.perf_counter()
    board = create_board(DEVICE, "rpi5", say=lambda *_: None)
    create_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        board.start(say=lambda *_: None)
        start_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        board.stop(say=lambda *_: None)
        stop_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        board.start(say=lambda *_: None)
        restart_s = time.perf_counter() - t0
        report["lifecycle"] = {
            k: round(v, 1)
            for k, v in (
                ("create_cached_s", create_s),
                ("start_s", start_s),
                ("stop_s", stop_s),
                ("restart_s", restart_s),
            )
        }

        dist = work / "dist"
        timed([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, REPO])
        spec = f"{next(dist.glob('edgewise-*.whl'))}[edge]"
        wheels = work / "wheelhouse"
        wheelhouse_s, _ = timed(
            [BIN / "edge-deploy", "wheelhouse", "--device", "rpi5", "--out", wheels, "--edgewise-spec", spec]
        )
        fleet_dir = work / "fleet"
        broker_dir = fleet_dir / "broker"
        logins, _ = add_users(broker_dir, FLEET, operators={"operator": None})
        (fleet_dir / "operator.json").write_text(json.dumps({"password": logins["operator"]}))
        tls = self_signed_cert(fleet_dir / "tls")
        tls_port = free_port()
        bootstrap_s, _ = timed([
            BIN / "edge-deploy", "--device", "rpi5", "--host", DEVICE, "--bootstrap", "--key", args.key,
            "--wheelhouse", wheels, "--edgewise-spec", spec, "--fleet", FLEET, "--mqtt-host", "127.0.0.1",
            "--mqtt-port", tls_port, "--mqtt-ca", tls[0], "--broker-dir", broker_dir,
        ])  # fmt: skip
        deploy_s, _ = timed([BIN / "edge-deploy", "--host", DEVICE, bundle])
        _, status_text = timed([BIN / "edge-deploy", "status", "--host", DEVICE, "--json"])
        status = json.loads(status_text)
        install = board.rootfs / ROOT.lstrip("/") / "models" / status["current"]
        report["setup"] = {
            "wheelhouse_s": round(wheelhouse_s, 1),
            "wheels": len(list(wheels.glob("*.whl"))),
            "wheelhouse_mb": round(du_mb(wheels)),
            "bootstrap_s": round(bootstrap_s, 1),
            "venv_mb": round(du_mb(board.rootfs / ROOT.lstrip("/") / "venv")),
            "install_mb": round(du_mb(install), 1),
            "deploy_s": round(deploy_s, 1),
            "current": status["current"],
        }
        # the same check on this machine (x86_64), on the bundle as the board installed it
        _, here = timed([sys.executable, "-m", "edgewise.edge.reference", install, "--device", "x86-local"])
        # and on the board as qemu's default CPU (max: SVE2, i8mm, which no Pi has), for contrast
        remote_install = f"{ROOT}/models/{status['current']}"
        on_max = board.ssh(
            f"QEMU_CPU=max {ROOT}/venv/bin/python -m edgewise.edge.reference {remote_install} --device rpi5",
            timeout=600,
            check=False,
        )
        report["parity"] = parity_table(
            install, status["parity"], json.loads(here), json.loads(on_max.stdout)
        )
        report["parity_machines"] = {
            "board": status["parity"].get("machine"),
            "here": json.loads(here).get("machine"),
        }
        load_bundle(install)  # still verifies after the device wrote parity.json beside it
        report["daemon"] = daemon_figures(board, fleet_dir, broker_dir, tls, tls_port)
    finally:
        board.destroy(say=lambda *_: None)
    if not args.skip_tests:
        report["board_tests"] = board_tests(work / "board-tests.xml")
    shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(report["parity"], args.out / "board_parity.png")
    write_report(args.out, "board_report", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
