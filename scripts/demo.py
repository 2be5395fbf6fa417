"""The end-to-end demo behind ``scripts/demo.sh``: cloud to device on this machine.

    1. synthesize an emotional-speech corpus with espeak-ng
    2. train the teacher, then the tiny student with HRF and distillation (merged at the end)
    3. make a fleet signing key, export ONNX (fp32, int8) and TFLite (fp32, int8), each checked
       against PyTorch, in a bundle signed with it
    4. install it with ``edge-deploy --device local --key`` (the signature is verified)
    5. start Mosquitto with per-device logins and the fleet ACL (no anonymous clients), and the
       daemon (trusting the fleet key, logging in as its device); feed held-out wav files through
       it and print the events (prediction beside each file's true label) and telemetry received
    6. write the benchmark report (``edgewise bench``)

Everything it starts (broker, daemon) is stopped when it ends, fails or is interrupted (Ctrl-C).
Outputs land in ``DEMO_DIR`` (default ``demo-out/``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
DEMO = Path(os.environ.get("DEMO_DIR", REPO / "demo-out")).resolve()
N = int(os.environ.get("DEMO_N", "1200"))
SEED = os.environ.get("DEMO_SEED", "0")
FILES = int(os.environ.get("DEMO_FILES", "12"))
FLEET, DEVICE = "demo", "laptop"


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(*args: str) -> None:
    print("$ " + " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True)


def ew(*args: str) -> None:
    run(BIN / "edgewise", *args)


def main() -> int:
    start = time.perf_counter()
    runs, bundles, device = DEMO / "runs", DEMO / "bundles", DEMO / "device"
    for folder in (runs, bundles, device, DEMO / "bench"):
        shutil.rmtree(folder, ignore_errors=True)

    step(f"1/6 synthesize a {N}-utterance emotional-speech corpus with espeak-ng")
    ew("data", "speech", "--out", DEMO / "corpus", "--n", str(N), "--seed", SEED, "--force")

    step("2/6 train the teacher (small, plain), then the tiny student with HRF + distillation")
    ew(
        "train",
        "ser",
        "--config",
        "small",
        "--set",
        "model.hrf=null",
        "--data",
        DEMO / "corpus",
        "--out",
        runs / "teacher",
        "--seed",
        SEED,
    )
    ew(
        "train",
        "ser",
        "--config",
        "tiny",
        "--teacher",
        runs / "teacher",
        "--data",
        DEMO / "corpus",
        "--out",
        runs / "student",
        "--seed",
        SEED,
    )

    step(
        "3/6 a fleet signing key; export ONNX and TFLite, fp32 and int8, each checked against PyTorch, signed"
    )
    keys = DEMO / "keys"
    ew("bundle", "keygen", "--out", keys / "fleet", "--force")
    ew(
        "export",
        runs / "student",
        "--out",
        bundles,
        "--format",
        "onnx",
        "--format",
        "tflite",
        "--precision",
        "fp32",
        "--precision",
        "int8",
        "--sign-key",
        keys / "fleet.key",
    )
    bundle = next(p for p in bundles.iterdir() if p.is_dir())

    step("4/6 install the bundle on this machine with edge-deploy (signature checked with the fleet key)")
    archive = bundle.parent / f"{bundle.name}.tar.gz"
    run(BIN / "edge-deploy", "--device", "local", "--root", device, "--key", keys / "fleet.pub", archive)

    step(f"5/6 Mosquitto (logins + ACL) and the daemon; {FILES} held-out wav files, results over MQTT")
    events = live_run(device, DEMO / "corpus", keys / "fleet.pub")

    step("6/6 benchmark report")
    ew("bench", bundle, "--run", runs / "student", "--out", DEMO / "bench")

    summary(runs, events, time.perf_counter() - start)
    return 0


def true_labels(corpus: Path) -> dict[Path, str]:
    """Each held-out file's label, as the corpus's test.csv gives it."""
    from edgewise.cloud.data.corpus import load_corpus

    return {Path(u.path): u.label for u in load_corpus(corpus).split("test")}


def live_run(root: Path, corpus: Path, public_key: Path) -> list[dict]:
    """Broker, subscriber and daemon; every one of them is stopped on the way out."""
    import paho.mqtt.client as mqtt
    import yaml

    from edgewise.devtools.mosquitto import MosquittoBroker
    from edgewise.edge.deploy.broker_acl import add_users, device_user

    truth = true_labels(corpus)
    wavs = list(truth)[:FILES]
    received: list[dict] = []
    cond = threading.Condition()
    # the fleet's broker files: one login for the device, one for this operator; the ACL confines
    # the device to edgewise/demo/laptop/ (and its own cmd); anonymous clients are refused
    fleet_dir = DEMO / "broker-fleet"
    shutil.rmtree(fleet_dir, ignore_errors=True)
    logins, _ = add_users(fleet_dir, FLEET, devices={DEVICE: None}, operators={"demo-operator": None})
    device_login = device_user(FLEET, DEVICE)

    def on_message(client, userdata, message):
        payload = json.loads(message.payload)
        kind = payload.get("type")
        if kind == "event":
            src = Path(payload["source"]["name"])
            label, expected = payload["label"], truth.get(src, "?")
            print(
                f"  event      {src.name:28} {label:8} (true: {expected:8}{' ok' if label == expected else ' --'}) "
                f"p={max(payload['probabilities'].values()):.2f} "
                f"{payload['latency_ms']:.1f} ms  (model {payload['model']['version']})",
                flush=True,
            )
        elif kind == "telemetry" and payload["inferences"]:
            lat = payload["latency_ms"] or {}
            print(
                f"  telemetry  {payload['inferences']} inferences, p50 {lat.get('p50', 0):.1f} ms, "
                f"rss {payload['rss_mb']:.0f} MB, cpu {payload['cpu_percent']:.0f}%, outbox {payload['outbox_depth']}",
                flush=True,
            )
        elif kind == "status":
            print(f"  status     {payload['state']} {payload.get('model') or ''}", flush=True)
        with cond:
            received.append(payload)
            cond.notify_all()

    with MosquittoBroker(
        workdir=DEMO / "broker", password_file=fleet_dir / "passwords", acl_file=fleet_dir / "acl"
    ) as broker:
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.username_pw_set("demo-operator", logins["demo-operator"])
        sub.on_message = on_message
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"edgewise/{FLEET}/{DEVICE}/{t}", 1) for t in ("status", "telemetry", "events")]
        )
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        config = root / "daemon.yaml"
        config.touch(mode=0o600)
        config.chmod(0o600)  # it holds the device's broker password
        mqtt_settings = {"host": broker.host, "port": broker.port, "fleet": FLEET, "device": DEVICE}
        mqtt_settings |= {"username": device_login, "password": logins[device_login]}
        config.write_text(
            yaml.safe_dump(
                {
                    "device": "x86-local",
                    "root": str(root),
                    "public_key": str(public_key),
                    "telemetry_interval_s": 2.0,
                    "mqtt": mqtt_settings,
                    "audio": {"source": "file", "files": [str(w) for w in wavs]},
                }
            )
        )
        print(f"$ {BIN / 'edgewise'} daemon --config {config}", flush=True)
        daemon = subprocess.Popen([str(BIN / "edgewise"), "-q", "daemon", "--config", str(config)])
        try:

            def files_done(items):
                seen = {Path(p["source"]["name"]) for p in items if p.get("type") == "event"}
                telemetry = any(p.get("type") == "telemetry" and p["inferences"] for p in items)
                return seen >= set(wavs) and telemetry

            with cond:
                cond.wait_for(lambda: files_done(received) or daemon.poll() is not None, timeout=120)
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited with {daemon.returncode}")
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(30)
                except subprocess.TimeoutExpired:
                    daemon.kill()
            time.sleep(0.3)  # the offline status
            sub.disconnect()
            sub.loop_stop()
    return [p for p in received if p.get("type") == "event"]


def summary(runs: Path, events: list[dict], seconds: float) -> None:
    print()
    print(f"{'model':34} {'params':>9} {'UA':>6} {'WA':>6} {'F1':>6}")
    for name, run_dir in (
        ("teacher (small, plain)", runs / "teacher"),
        ("student (tiny, HRF+KD, merged)", runs / "student"),
    ):
        m = json.loads((run_dir / "metrics.json").read_text())
        print(f"{name:34} {m['parameters']:>9,} {m['ua']:>6.3f} {m['wa']:>6.3f} {m['macro_f1']:>6.3f}")
    truth = true_labels(DEMO / "corpus")
    right = sum(truth.get(Path(e["source"]["name"])) == e["label"] for e in events)
    print(f"on the device: {len(events)} events over MQTT, {right} with the file's true label")
    print(f"benchmark report: {DEMO / 'bench' / 'bench.md'}")
    print(f"demo finished in {seconds:.0f} s (after setup); outputs in {DEMO}/")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(
            f"demo: step failed ({' '.join(map(str, exc.cmd[:3]))} ... exited {exc.returncode})",
            file=sys.stderr,
        )
        sys.exit(exc.returncode or 1)
    except KeyboardInterrupt:
        print("demo: interrupted; everything it started has been stopped", file=sys.stderr)
        sys.exit(130)
