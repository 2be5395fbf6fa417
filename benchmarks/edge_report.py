"""The edge report: the daemon as a device runs it, measured against a real Mosquitto in one run.

1. Memory: the daemon's resident memory with the model loaded (``/proc/PID/status``), and proof
   that torch is not in the process (``torch_loaded`` from its status command, and no libtorch in
   ``/proc/PID/maps``).
2. End-to-end SER latency per utterance: a test-split utterance is written to the daemon's stdin
   at once, then quiet follows in real time (20 ms chunks), as a microphone would deliver it; the
   clock runs from the end of the speech (the file's trailing quiet cut off) to its event arriving at an MQTT subscriber.
   It covers the VAD waiting for ``min_silence_s`` of quiet, Silero VAD, the log-mel front-end, the model, the outbox and the broker. The event's
   own ``latency_ms`` (front-end + model) is shown too.
3. Telemetry throughput at QoS 1: edgewise's client (every message through the SQLite outbox)
   next to a raw paho loop, same broker, same payloads, alternating rounds; msg/s until the
   subscriber has received every message.
4. A broker stop and restart in the middle of a 10,000-event run: lost and duplicated events at the
   subscriber (a persistent session; duplicates are detectable by event id).
5. ``kill -9`` of the daemon in the middle of a bundle switch, then a restart: how many trials came
   back with a healthy model.
6. A power cut during ``edge-deploy`` (``kill -9`` at a random moment of a deploy), then what the
   device does at boot (``recover``, open ``current``): how many trials had a working model.

Writes ``OUT/edge_report.{json,md}`` and ``OUT/edge_latency.png``::

    .venv/bin/python benchmarks/edge_report.py --run benchmarks/work/ser/conv_transformer-hrf-kd-s0 \
        --corpus benchmarks/work/corpus2000 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import yaml
from report_files import write_report

from edgewise.audio import load_audio
from edgewise.bundle import load_bundle
from edgewise.devtools.mosquitto import MosquittoBroker
from edgewise.edge.install import activate, install_bundle
from edgewise.edge.telemetry.client import TelemetryClient

log = logging.getLogger("edge_report")
FLEET, DEVICE = "bench", "dev1"
BASE = f"edgewise/{FLEET}/{DEVICE}"
REPO = Path(__file__).resolve().parents[1]
QUIET_S = 1.5  # quiet after each utterance, streamed in real time until the event arrives


class Collector:
    """A paho subscriber that records (receive time, decoded JSON) per message."""

    def __init__(
        self, broker: MosquittoBroker, topics: list[str], *, client_id: str = "", persistent: bool = False
    ):
        self.items: list[tuple[float, str, dict]] = []
        self.cond = threading.Condition()
        kwargs = {"client_id": client_id}
        if persistent:
            kwargs.update(protocol=mqtt.MQTTv311, clean_session=False)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        self.client.reconnect_delay_set(0.05, 0.5)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("subscriber got no SUBACK")

    def _on_message(self, client, userdata, message) -> None:
        now = time.perf_counter()
        try:
            payload = json.loads(message.payload)
        except ValueError:
            payload = {"raw": True}
        with self.cond:
            self.items.append((now, message.topic, payload))
            self.cond.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.items):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(min(remaining, 0.2))
        return True

    def of_type(self, kind: str) -> list[tuple[float, dict]]:
        with self.cond:
            return [(t, p) for t, _, p in self.items if p.get("type") == kind]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def command(broker: MosquittoBroker, action: str, cmd_id: str) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(f"{BASE}/cmd", json.dumps({"id": cmd_id, "action": action}), qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def start_daemon(root: Path, broker: MosquittoBroker, work: Path, name: str) -> subprocess.Popen:
    cfg = {
        "device": "x86-local",
        "root": str(root),
        "threads": 2,
        "telemetry_interval_s": 5.0,
        "mqtt": {"host": broker.host, "port": broker.port, "fleet": FLEET, "device": DEVICE},
        "audio": {"source": "stdin", "stdin_format": "raw"},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with open(work / f"{name}.log", "ab") as logfile:
        return subprocess.Popen(
            [sys.executable, "-m", "edgewise", "daemon", "--config", str(path)],
            stdin=subprocess.PIPE,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


def wait_health(root: Path, proc: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            h = json.loads((root / "health.json").read_text())
            if h["pid"] == proc.pid:
                return h
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError("no health report from the daemon")


def trim_trailing_quiet(audio: np.ndarray, sr: int = 16000) -> np.ndarray:
    """Cut the utterance after its last 20 ms frame louder than 12 dB over the file's noise floor."""
    frame = int(0.02 * sr)
    n = audio.size // frame
    rms = np.sqrt((audio[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(rms > 4 * np.percentile(rms, 10))
    return audio[: (loud[-1] + 1) * frame] if loud.size else audio


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


# --------------------------------------------------------------------------------------------------


def daemon_section(root: Path, broker: MosquittoBroker, work: Path, wavs: list[Path]) -> dict:
    sub = Collector(broker, [f"{BASE}/events", f"{BASE}/cmd/ack", f"{BASE}/status"])
    proc = start_daemon(root, broker, work, "daemon")
    try:
        health = wait_health(root, proc)
        sub.wait(
            lambda items: any(p.get("type") == "status" and p.get("state") == "online" for _, _, p in items),
            30,
        )
        quiet = np.random.default_rng(0).normal(0, 0.003, int(QUIET_S * 16000)).astype(np.float32)
        chunk = int(0.02 * 16000)
        e2e, model_ms, durations = [], [], []
        for i, wav in enumerate(wavs):
            audio = trim_trailing_quiet(load_audio(wav))
            proc.stdin.write(pcm16(audio))  # the utterance up to the end of its speech, at once
            proc.stdin.flush()
            t0 = time.perf_counter()
            want = i + 1
            for k in range(0, quiet.size, chunk):  # then quiet in real time, as a microphone gives it
                proc.stdin.write(pcm16(quiet[k : k + chunk]))
                proc.stdin.flush()
                if len(sub.of_type("event")) >= want:
                    break
                time.sleep(max(0.0, t0 + (k + chunk) / 16000 - time.perf_counter()))
            if not sub.wait(
                lambda items, n=want: sum(p.get("type") == "event" for _, _, p in items) >= n, 30
            ):
                log.warning("utterance %d (%s) gave no event (the VAD found no speech?)", i, wav.name)
                break
            t, event = sub.of_type("event")[-1]
            e2e.append((t - t0) * 1000)
            model_ms.append(event["latency_ms"])
            durations.append(audio.size / 16000)
            proc.stdin.write(pcm16(quiet[: int(0.2 * 16000)]))  # a gap before the next utterance
        rss_outside = None
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_outside = int(line.split()[1]) / 1024
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        command(broker, "status", "status-1")
        sub.wait(lambda items: any(p.get("id") == "status-1" for _, _, p in items), 30)
        status = next(p for _, _, p in sub.items if p.get("id") == "status-1")["result"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        sub.close()
    events = len(e2e)
    return {
        "model": health["model"],
        "backend": status["pipeline"]["backend"],
        "artifact": status["pipeline"]["artifact"],
        "rss_mb": rss_outside,
        "rss_mb_reported": status["rss_mb"],
        "torch_loaded": status["torch_loaded"],
        "libtorch_mapped": "libtorch" in maps,
        "utterances": len(wavs),
        "events": events,
        "audio_seconds_median": statistics.median(durations) if durations else None,
        "e2e_ms": _pct(e2e),
        "event_latency_ms": _pct(model_ms),
        "e2e_values_ms": e2e,
        "exit_code": code,
    }


def _pct(values: list[float]) -> dict | None:
    if not values:
        return None
    a = np.asarray(values)
    return {k: float(np.percentile(a, q)) for k, q in (("p50", 50), ("p90", 90), ("p99", 99))} | {
        "n": len(values)
    }


def throughput_section(broker: MosquittoBroker, work: Path, n: int, rounds: int) -> dict:
    payload = json.dumps(
        {"schema": 1, "type": "event", "label": "happy", "probabilities": {"happy": 0.9}}
    ).encode()
    results: dict[str, list[float]] = {"paho": [], "edgewise": []}
    for r in range(rounds):
        for kind in ("paho", "edgewise") if r % 2 == 0 else ("edgewise", "paho"):
            topic = f"edgewise/{FLEET}/{kind}{r}/events"
            sub = Collector(broker, [topic])
            t0 = time.perf_counter()
            if kind == "paho":
                client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
                client.max_inflight_messages_set(100)
                client.max_queued_messages_set(0)
                client.connect(broker.host, broker.port)
                client.loop_start()
                infos = [client.publish(topic, payload, qos=1) for _ in range(n)]
                for info in infos:
                    info.wait_for_publish(60)
            else:
                client = TelemetryClient(
                    {
                        "host": broker.host,
                        "port": broker.port,
                        "fleet": FLEET,
                        "device": f"{kind}{r}",
                        "outbox_path": str(work / f"outbox-{r}.db"),
                        "outbox_max_rows": n + 10,
                    }
                ).start()
                for i in range(n):
                    client.publish_event(label="happy", probabilities={"happy": 0.9}, result={"i": i})
            ok = sub.wait(lambda items: len(items) >= n, 120)
            seconds = time.perf_counter() - t0
            if kind == "paho":
                client.disconnect()
                client.loop_stop()
            else:
                client.close(flush_timeout=5)
            sub.close()
            if not ok:
                raise RuntimeError(f"{kind}: subscriber got {len(sub.items)} of {n}")
            results[kind].append(n / seconds)
    paho, ours = statistics.median(results["paho"]), statistics.median(results["edgewise"])
    return {
        "messages": n,
        "rounds": rounds,
        "paho_msg_s": paho,
        "edgewise_msg_s": ours,
        "ratio": ours / paho,
        "all": results,
    }


def broker_restart_section(work: Path, n: int = 10_000, stop_at: int = 3_000, down_s: float = 2.0) -> dict:
    broker = MosquittoBroker(workdir=work / "broker-restart", persistence=True).start()
    try:
        sub = Collector(broker, [f"{BASE}/events"], client_id="bench-consumer", persistent=True)
        client = TelemetryClient(
            {
                "host": broker.host,
                "port": broker.port,
                "fleet": FLEET,
                "device": DEVICE,
                "outbox_path": str(work / "restart-outbox.db"),
                "outbox_max_rows": n + 10,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
            }
        ).start()
        client.wait_connected(10)
        t0 = time.perf_counter()
        ids = []
        for i in range(n):
            if i == stop_at:
                broker.stop()
                stopped = time.perf_counter()
            if i == stop_at + 1000:
                time.sleep(max(0.0, down_s - (time.perf_counter() - stopped)))
                broker.start()
            ids.append(client.publish_event(label="neutral", result={"seq": i}).id)
        received = sub.wait(lambda items: len({p.get("id") for _, _, p in items}) >= n, 120)
        seconds = time.perf_counter() - t0
        got = [p.get("id") for _, _, p in sub.items]
        unique = set(got)
        seqs = [p["result"]["seq"] for _, _, p in sub.items if "result" in p]
        first_seen = list(dict.fromkeys(seqs))
        client.close(flush_timeout=10)
        sub.close()
    finally:
        broker.close()
    return {
        "published": n,
        "broker_stopped_after": stop_at,
        "broker_down_s": down_s,
        "complete": received,
        "received_messages": len(got),
        "unique_ids": len(unique),
        "lost": len(set(ids) - unique),
        "duplicates_delivered": len(got) - len(unique),
        "in_order_by_first_delivery": first_seen == sorted(first_seen),
        "seconds": seconds,
    }


def kill_switch_section(
    root: Path, broker: MosquittoBroker, work: Path, versions: list[Path], trials: int
) -> dict:
    rng = np.random.default_rng(0)
    ok = 0
    outcomes = []
    for trial in range(trials):
        proc = start_daemon(root, broker, work, f"kill-{trial}")
        wait_health(root, proc)
        activate(root, versions[trial % len(versions)])
        proc.send_signal(signal.SIGHUP)
        delay = float(rng.uniform(0, 0.25))
        time.sleep(delay)
        proc.kill()
        proc.wait()
        proc = start_daemon(root, broker, work, f"kill-{trial}-after")
        health = wait_health(root, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        ok += bool(health["ok"])
        outcomes.append(
            {"kill_after_s": round(delay, 3), "came_back_with": health["model"], "ok": health["ok"]}
        )
    return {"trials": trials, "came_back_healthy": ok, "outcomes": outcomes}


def power_cut_section(root: Path, work: Path, bundle: Path, trials: int) -> dict:
    """``kill -9`` of ``edge-deploy`` at a random moment (a power cut), then what a device does at
    boot: ``recover`` and open ``current``. Each trial deploys a new version (a fresh copy to do)."""
    from edgewise.devices import load_profile
    from edgewise.edge.install import current_install, recover
    from edgewise.edge.runtime import ModelRuntime

    rng = np.random.default_rng(1)
    profile = load_profile("x86-local")
    outcomes, ok = [], 0
    span = None  # one uninterrupted deploy first, to know how long a deploy takes here
    for trial in range(trials + 1):
        copy = work / f"cut-{trial}"
        shutil.copytree(bundle, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["version"] = f"8.{trial}.0"
        (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgewise.edge.deploy.cli",
                "-q",
                "--device",
                "local",
                "--root",
                str(root),
                str(copy),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        t0 = time.perf_counter()
        if span is None:
            if proc.wait(120) != 0:
                raise RuntimeError("edge-deploy failed without interruption")
            span = time.perf_counter() - t0
            continue
        delay = float(rng.uniform(0.3 * span, 1.1 * span))  # past interpreter start-up, through the switch
        try:
            finished = proc.wait(delay) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            finished = False
        repaired = recover(root)
        current = current_install(root)
        try:
            with load_bundle(current) as opened:
                ModelRuntime.open(opened, profile)
            works = True
        except Exception as exc:  # recorded: a trial that does not come back is the finding
            works = False
            log.error("trial %d: %s", trial, exc)
        ok += works
        version = manifest["version"]
        outcomes.append(
            {
                "kill_after_s": round(delay, 3),
                "deploy_finished_first": finished,
                "new_version_installed": (root / "models" / manifest["name"] / version).is_dir(),
                "switched_to_new": current is not None and current.name == version,
                "current": f"{current.parent.name}/{current.name}" if current else None,
                "recover": repaired,
                "works": works,
            }
        )
    return {
        "trials": trials,
        "deploy_seconds": span,
        "came_back_working": ok,
        "killed_after_install": sum(
            o["new_version_installed"] and not o["deploy_finished_first"] for o in outcomes
        ),
        "killed_after_switch": sum(o["switched_to_new"] and not o["deploy_finished_first"] for o in outcomes),
        "repaired_at_boot": sum(bool(o["recover"]) for o in outcomes),
        "killed_mid_deploy": sum(not o["deploy_finished_first"] for o in outcomes),
        "outcomes": outcomes,
    }


# --------------------------------------------------------------------------------------------------


def markdown(r: dict) -> str:
    d, t, b, k, pc = r["daemon"], r["throughput"], r["broker_restart"], r["kill_switch"], r["power_cut"]
    e2e, ev = d["e2e_ms"], d["event_latency_ms"]
    return "\n".join(
        [
            "# Edge report: the daemon on this machine",
            "",
            f"Machine: {r['machine']}. Model: `{d['model']}` ({d['artifact']}, {d['backend']}). "
            f"Mosquitto on loopback. Total wall time {r['wall_seconds']:.0f} s.",
            "",
            "| measure | result |",
            "|---|---|",
            f"| daemon resident memory, model loaded | {d['rss_mb']:.0f} MB (VmRSS) |",
            f"| torch in the daemon process | {'yes' if d['torch_loaded'] else 'no'} (`sys.modules`); libtorch mapped: {'yes' if d['libtorch_mapped'] else 'no'} |",
            f"| utterances in / events out | {d['utterances']} / {d['events']} (median {d['audio_seconds_median']:.2f} s of audio) |",
            f"| end-to-end latency, end of speech -> event received | p50 {e2e['p50']:.0f} ms, p90 {e2e['p90']:.0f} ms, p99 {e2e['p99']:.0f} ms |",
            f"| of which front-end + model (event `latency_ms`) | p50 {ev['p50']:.2f} ms, p90 {ev['p90']:.2f} ms |",
            f"| QoS 1 throughput, raw paho loop | {t['paho_msg_s']:.0f} msg/s ({t['messages']} messages, median of {t['rounds']} rounds) |",
            f"| QoS 1 throughput, edgewise client (SQLite outbox) | {t['edgewise_msg_s']:.0f} msg/s ({t['ratio']:.2f}x paho) |",
            f"| broker stopped after {b['broker_stopped_after']} of {b['published']} events, down {b['broker_down_s']:.0f} s | lost {b['lost']}, duplicates delivered {b['duplicates_delivered']} (detectable by id), in order: {b['in_order_by_first_delivery']} |",
            f"| `kill -9` during a bundle switch, then restart | {k['came_back_healthy']} of {k['trials']} trials came back with a healthy model |",
            f"| power cut (`kill -9`) during `edge-deploy`, then boot (`recover`) | {pc['came_back_working']} of {pc['trials']} trials had a working model ({pc['killed_mid_deploy']} killed before the deploy finished: {pc['killed_after_install']} after the new version was copied in, {pc['killed_after_switch']} after the switch; {pc['repaired_at_boot']} needed repair at boot) |",
            "",
            "End-to-end latency: each utterance is written at once, then quiet follows in real time as a "
            "microphone would deliver it; the span runs from the end of the utterance's audio to the event at "
            "the subscriber (each file's trailing quiet cut off, so the clock starts where the speech ends). Most of "
            "it is the VAD waiting for `min_silence_s` (0.4 s) of quiet before it closes the utterance; the rest is the VAD, the front-end, "
            "the model (the event's `latency_ms`), the outbox and the broker.",
            "",
        ]
    )


def plot(r: dict, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.hist(r["daemon"]["e2e_values_ms"], bins=20, color="tab:blue")
    a1.set_xlabel("end of speech -> MQTT event received (ms)")
    a1.set_ylabel("utterances")
    t = r["throughput"]
    a2.bar(
        ["raw paho", "edgewise client"],
        [t["paho_msg_s"], t["edgewise_msg_s"]],
        color=["tab:gray", "tab:orange"],
    )
    a2.set_ylabel("QoS 1 messages per second")
    fig.tight_layout()
    path = out / "edge_latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle to install (default: export --run)")
    parser.add_argument("--run", type=Path, default=Path("benchmarks/work/ser/conv_transformer-hrf-kd-s0"))
    parser.add_argument("--corpus", type=Path, default=Path("benchmarks/work/corpus2000"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill-trials", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("edgewise.edge.telemetry").setLevel(logging.WARNING)
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="edge-report-"))
    try:
        bundle = args.bundle
        if bundle is None:
            from edgewise.cli import main as cli

            code = cli(
                [
                    "-q",
                    "export",
                    str(args.run),
                    "--out",
                    str(work / "bundle"),
                    "--precision",
                    "int8",
                    "--precision",
                    "fp32",
                ]
            )
            if code:
                raise SystemExit(f"export failed ({code})")
            bundle = next(p for p in (work / "bundle").iterdir() if p.is_dir())
        root = work / "root"
        activate(root, install_bundle(root, bundle))
        versions = []
        for v in ("9.1.0", "9.2.0"):
            copy = work / f"v{v}"
            shutil.copytree(bundle, copy)
            manifest = json.loads((copy / "manifest.json").read_text())
            manifest["version"] = v
            (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
            versions.append(install_bundle(root, copy))
        from edgewise.cloud.data.corpus import load_corpus

        wavs = [u.path for u in load_corpus(args.corpus).split("test")[: args.utterances]]
        with MosquittoBroker(workdir=work / "broker") as broker:
            log.info("daemon: memory and end-to-end latency over %d utterances", len(wavs))
            daemon = daemon_section(root, broker, work, wavs)
            log.info("throughput: %d messages x %d rounds", args.messages, args.rounds)
            throughput = throughput_section(broker, work, args.messages, args.rounds)
            log.info("kill -9 during a switch: %d trials", args.kill_trials)
            kills = kill_switch_section(root, broker, work, versions, args.kill_trials)
        log.info("power cut during edge-deploy: %d trials", args.kill_trials)
        power_cut = power_cut_section(root, work, bundle, args.kill_trials)
        log.info("broker restart in a 10,000-event run")
        restart = broker_restart_section(work)
        with load_bundle(bundle) as b:
            model = f"{b.manifest.name} {b.manifest.version}"
        report = {
            "schema": 1,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "bundle": model,
            "daemon": daemon,
            "throughput": throughput,
            "broker_restart": restart,
            "kill_switch": kills,
            "power_cut": power_cut,
            "wall_seconds": time.perf_counter() - t_start,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        report["plot"] = plot(report, args.out)
        write_report(args.out, "edge_report", report, markdown(report))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
