"""The cloud half on this machine (issue 15): the cascade, telemetry ingest, Ray Serve beside the
embedded app, and the registry to a device, everything real and measured in one run.

Parts (``--skip PART`` leaves one out; with ``--merge`` a skipped part is carried over from the
report already in OUT, marked with the time it was made):

* ``cascade``: a Mosquitto broker, ``edgewise cloud serve`` (a serve-init folder: self-signed
  certificate, token) serving the SER teacher run with its MQTT bridge, and five device daemons
  running the SER bundle: ``device`` (its offload rule never declines), ``cloud-https`` and
  ``cloud-mqtt`` (``ser.below: 1``: every utterance is asked of the cloud, over HTTPS or over the
  MQTT route), ``breaker`` (opens after 3 failures) and ``device-nosync`` (``device`` with its
  outbox at ``outbox_sync: normal``: what the outbox's fsyncs add). ``infer`` commands (real WAVs)
  go over MQTT round by round to each daemon in turn, timed from publishing the command to
  receiving its ack.
  Then the server is stopped (SIGSTOP: it accepts connections, never answers) and killed
  (SIGKILL): the fallback times against the bound the daemons report (``max_wait_s``), and the
  answers once the breaker is open.
* ``ingest``: ``benchmarks/cloud_ingest.py``'s :func:`measure` (Mosquitto -> SQLite and
  PostgreSQL, 1 and 2 workers; loss across an ingest kill, a broker restart, and a broker restart
  with the worker back late, from a raw paho publisher and from the devices' TelemetryClient).
* ``ray``: the same serve folder (the SER teacher run and the rec run) as the embedded app and as
  a Ray Serve deployment with 2 replicas, both up at once: the same requests to both (answers
  compared without their timings), then ``--clients`` concurrent clients (keep-alive HTTPS) per
  endpoint, the two servers alternating round by round: requests/s, p50/p99.
* ``registry``: as tests/cloud/registry/test_rollout.py: broker, ingest worker, server with the
  registry and the fleet store, a daemon on 1.0.0 (fleet-signed); ``edgewise registry push`` of
  1.1.0 and of a broken 2.0.0, ``promote`` 1.1.0 (time until the device's ack and until the
  registry shows it ``current``), ``promote`` 2.0.0 (time until ``failed``, and the reason).
* ``vllm``: not run without a GPU; the launch command the preset writes is recorded.

By default the models are the test suite's tiny ones (tests/prebuild.py: the tone corpus, the tiny
SER run, its bundle, the tiny rec run and bundle), built once under ``--work``; ``--ser-run``,
``--ser-bundle``, ``--rec-run``, ``--rec-bundle`` name others. Writes OUT/cloud_report.{json,md,png}::

    .venv/bin/python benchmarks/cloud_report.py --out benchmarks/results
    .venv/bin/python benchmarks/cloud_report.py --out /tmp/x --skip ray --skip ingest   # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(REPO), str(HERE)]

from report_files import write_report  # noqa: E402

from edgewise.devtools.mosquitto import MosquittoBroker, free_port  # noqa: E402

PARTS = ("cascade", "ingest", "ray", "registry", "vllm")
FLEET = "lab"
SER_MODEL, REC_MODEL = "ser-teacher", "rec-teacher"
ARTIFACT_JOBS = ("edge-corpus", "tiny-run", "ser-bundle", "rec-run", "rec-bundle")


def say(*args: Any) -> None:
    print("cloud_report:", *args, flush=True)


def stats_ms(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    ms = np.asarray(seconds, dtype=float) * 1000
    return {
        "n": int(ms.size),
        "p50": round(float(np.percentile(ms, 50)), 1),
        "p99": round(float(np.percentile(ms, 99)), 1),
        "max": round(float(ms.max()), 1),
        "mean": round(float(ms.mean()), 1),
    }


def p50(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.median(values)), 2) if values else None


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


class Cleanup(contextlib.ExitStack):
    """Closes what a part started, last first, even when the part fails; a close that fails is
    reported, not raised over the part's own error."""

    def add(self, fn, *args: Any) -> None:  # noqa: ANN001
        def safe() -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001
                say(f"cleanup: {getattr(fn, '__qualname__', fn)}: {exc}")

        self.callback(safe)


# --------------------------------------------------------------------------------------------------
# models


def artifacts(args: argparse.Namespace, commands: list[str]) -> dict[str, Path]:
    """The runs and bundles the parts serve: given ones, or the test suite's tiny ones (built
    once under WORK/artifacts by tests/prebuild.py, as the suite builds them)."""
    folder = args.work / "artifacts"
    missing = [job for job in ARTIFACT_JOBS if not (folder / f"{job}.done").exists()]
    wanted_default = not all((args.ser_run, args.ser_bundle, args.rec_run, args.rec_bundle))
    cmd = [sys.executable, "-m", "tests.prebuild", str(folder), *ARTIFACT_JOBS]
    if wanted_default:
        commands.append(" ".join(["python", "-m", "tests.prebuild", str(folder), *ARTIFACT_JOBS]))
    if wanted_default and missing:
        folder.mkdir(parents=True, exist_ok=True)
        say(f"building the tiny models under {folder} (about 2 minutes)")
        subprocess.run(["nice", "-n", "5", *cmd[:4], *missing], cwd=REPO, check=True)
        failed = [job for job in ARTIFACT_JOBS if not (folder / f"{job}.done").exists()]
        if failed:
            sys.exit(f"cloud_report: could not build {', '.join(failed)} (see the output above)")
    return {
        "ser_run": (args.ser_run or folder / "tiny-run" / "tiny").resolve(),
        "ser_bundle": (args.ser_bundle or folder / "ser-bundle" / "ser-tiny-1.0.0").resolve(),
        "rec_run": (args.rec_run or folder / "rec-run" / "run").resolve(),
        "rec_bundle": (args.rec_bundle or folder / "rec-bundle" / "rec-lazy-small-1.0.0").resolve(),
        "wavs": (folder / "edge-corpus" / "wavs").resolve(),
    }


def test_wavs(folder: Path, n: int) -> list[Path]:
    found = sorted(folder.glob("test*.wav")) or sorted(folder.glob("*.wav"))
    if not found:
        sys.exit(f"cloud_report: no WAV files in {folder}")
    step = max(1, len(found) // n)
    return found[::step][:n]


def wav_b64(path: Path) -> str:
    import base64

    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


# --------------------------------------------------------------------------------------------------
# talking to daemons over MQTT


class Commander:
    """Sends commands to the fleet's daemons over MQTT and times each ack, from publishing the
    command to its ack arriving here."""

    def __init__(self, broker: MosquittoBroker, fleet: str = FLEET) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.fleet = fleet
        self.acks: dict[str, tuple[float, Any]] = {}
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *a: c.subscribe(f"edgewise/{fleet}/+/cmd/ack", qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the benchmark's MQTT client got no SUBACK")

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        from edgewise.edge.telemetry.schema import decode

        arrived = time.perf_counter()
        payload = decode(message.payload)
        if payload.type == "command_ack":
            with self._cond:
                self.acks[payload.id] = (arrived, payload)
                self._cond.notify_all()

    def wait_ack(self, cmd_id: str, timeout: float = 120) -> tuple[float, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while cmd_id not in self.acks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"no ack for command {cmd_id} within {timeout:g} s")
                self._cond.wait(min(remaining, 0.1))
            return self.acks[cmd_id]

    def send(
        self, device: str, action: str, args: dict | None = None, timeout: float = 120
    ) -> tuple[Any, float]:
        """(the ack, seconds from publish to ack)."""
        cmd_id = f"{action}-{uuid.uuid4().hex[:10]}"
        body = json.dumps({"id": cmd_id, "action": action, "args": args or {}})
        t0 = time.perf_counter()
        self.client.publish(f"edgewise/{self.fleet}/{device}/cmd", body, qos=1)
        arrived, ack = self.wait_ack(cmd_id, timeout)
        return ack, arrived - t0

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_daemon(
    root: Path,
    bundle: Path,
    broker: MosquittoBroker,
    folder: Path,
    device_id: str,
    mqtt_extra=None,
    **settings,
):
    """A daemon process (tests/edge/daemon/conftest.py's DaemonProcess) on its own install root
    with ``bundle`` current, as device ``device_id`` of the fleet; not waited for."""
    from edgewise.edge.install import activate, install_bundle
    from tests.edge.daemon.conftest import DaemonProcess

    if bundle is not None:
        activate(root, install_bundle(root, bundle))
    mqtt = {"host": broker.host, "port": broker.port, "fleet": FLEET, "device": device_id, "keepalive_s": 5,
            "reconnect_min_s": 0.05, "reconnect_max_s": 0.5, **(mqtt_extra or {})}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    return DaemonProcess(root, broker, {"source": "none"}, folder, mqtt=mqtt, **settings).start()


def stop_daemon(d) -> None:  # noqa: ANN001
    if d.proc is not None and d.proc.poll() is None:
        try:
            d.stop(timeout=20)
        except AssertionError:
            d.proc.kill()
            d.proc.wait(10)


def stop_server(server) -> None:  # noqa: ANN001
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


# --------------------------------------------------------------------------------------------------
# the cascade


def cascade(art: dict[str, Path], args: argparse.Namespace, commands: list[str]) -> dict[str, Any]:
    from tests.cloud.serve.conftest import ServerProcess, edit_config, serve_init

    work = fresh(args.work / "cascade")
    timing = {
        "timeout_s": args.timeout_s,
        "retries": 1,
        "backoff": {"base_s": 0.05, "max_s": 0.2, "jitter": 0.5},
    }
    max_wait_s = args.timeout_s * 2 + 0.05
    wavs = test_wavs(art["wavs"], 6)
    with Cleanup() as cleanup:
        broker = MosquittoBroker(workdir=work / "broker").start()
        cleanup.add(broker.close)
        port = free_port()
        config = serve_init(work / "cloud", f"run:{SER_MODEL}={art['ser_run']}", port=port)
        edit_config(config, mqtt={"host": broker.host, "port": broker.port})
        commands += [
            f"edgewise cloud serve-init {work / 'cloud'} --run {SER_MODEL}={art['ser_run']} --port {port}",
            f"  (then mqtt: {{host: {broker.host}, port: {broker.port}}} added to its config.yaml)",
            f"edgewise cloud serve --config {config}",
        ]
        server = ServerProcess(config, work / "serve.log")
        t0 = time.monotonic()
        server.start(timeout=300)
        server_start_s = time.monotonic() - t0
        cleanup.add(stop_server, server)
        say(f"cascade: server up in {server_start_s:.1f} s")

        client_files = {"token_file": str(config.parent / "client" / "token"),
                        "ca_file": str(config.parent / "tls" / "server.pem")}  # fmt: skip
        ask_all = {"model": SER_MODEL, "below": 1.0}
        plans = {
            "device": {"url": server.url, **client_files, **timing, "ser": {"model": SER_MODEL, "below": 1e-6}},
            "cloud-https": {"url": server.url, **client_files, **timing, "breaker": {"failures": 1000, "cooldown_s": 600}, "ser": ask_all},
            "cloud-mqtt": {"route": "mqtt", "token_file": client_files["token_file"], **timing,
                           "breaker": {"failures": 1000, "cooldown_s": 600}, "ser": ask_all},
            "breaker": {"url": server.url, **client_files, **timing, "breaker": {"failures": 3, "cooldown_s": 600}, "ser": ask_all},
        }  # fmt: skip
        daemons = {}
        plans["device-nosync"] = plans["device"]  # the same, its outbox without fsync: what the fsyncs cost
        for name, offload in plans.items():
            extra = {"outbox_sync": "normal"} if name == "device-nosync" else None
            d = start_daemon(
                work / name / "root", art["ser_bundle"], broker, work / name, name, extra, offload=offload
            )
            cleanup.add(stop_daemon, d)
            daemons[name] = d
        for d in daemons.values():
            d.wait_health(lambda h: h["ok"], timeout=180)
        commands.append(
            f"edgewise daemon --config {work / 'cloud-https' / 'daemon.yaml'}   (and device, device-nosync, cloud-mqtt, breaker beside it)"
        )
        commander = Commander(broker)
        cleanup.add(commander.close)
        status, _ = commander.send("cloud-https", "status")
        reported_wait = status.result["offload"]["max_wait_s"]

        expected = {"device": "device", "device-nosync": "device", "cloud-https": "cloud", "cloud-mqtt": "cloud",
                    "breaker": "cloud"}  # fmt: skip
        for name in daemons:  # warm up: models, TLS, the mqtt route's reply subscription
            for attempt in range(10):
                ack, _ = commander.send(name, "infer", {"wav_b64": wav_b64(wavs[0])})
                if ack.ok and ack.result["source"] == expected[name] and attempt >= 1:
                    break
                time.sleep(0.3)
            else:
                raise RuntimeError(f"cascade: {name} never answered from {expected[name]}: {ack}")

        samples: dict[str, list[dict]] = {}

        def infer(group: str, name: str, wav: Path) -> dict:
            ack, seconds = commander.send(name, "infer", {"wav_b64": wav_b64(wav)})
            if not ack.ok:
                raise RuntimeError(f"cascade: {name}: infer failed: {ack.error}")
            r = ack.result
            info = r.get("offload") or {}
            t = info.get("timings") or {}
            row = {"seconds": seconds, "source": r["source"], "code": info.get("code"),
                   "attempts": info.get("attempts"), "device_model_ms": r.get("latency_ms"),
                   "cloud_ms": t.get("cloud_ms"), "server_ms": (t.get("cloud_server") or {}).get("total_ms"),
                   "label": r.get("label"), "device_label": (info.get("device") or {}).get("label")}  # fmt: skip
            samples.setdefault(group, []).append(row)
            return row

        say(f"cascade: {args.requests} rounds over device, cloud-https, cloud-mqtt, device-nosync")
        for i in range(args.requests):
            wav = wavs[i % len(wavs)]
            for name in ("device", "cloud-https", "cloud-mqtt", "device-nosync"):
                infer(f"live:{name}", name, wav)
            _, seconds = commander.send("device", "status")  # the command path alone, no model
            samples.setdefault("live:status", []).append(
                {"seconds": seconds, "source": "-", "code": None, "attempts": None, "device_model_ms": None,
                 "cloud_ms": None, "server_ms": None, "label": None, "device_label": None}
            )  # fmt: skip

        say("cascade: server stopped (SIGSTOP)")
        os.kill(server.proc.pid, signal.SIGSTOP)
        for i in range(args.fallbacks):
            for name in ("cloud-https", "cloud-mqtt"):
                infer(f"stopped:{name}", name, wavs[i % len(wavs)])
        say("cascade: server killed (SIGKILL)")
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        for i in range(args.fallbacks):
            for name in ("cloud-https", "cloud-mqtt"):
                infer(f"killed:{name}", name, wavs[i % len(wavs)])
        for i in range(3):  # its breaker opens after 3 failed requests
            infer("killed:breaker-opening", "breaker", wavs[i % len(wavs)])
        for i in range(args.requests):
            infer("breaker-open", "breaker", wavs[i % len(wavs)])
        status, _ = commander.send("breaker", "status")
        breaker_state = status.result["offload"]["breaker"]

    groups = {}
    for group, rows in samples.items():
        groups[group] = {
            "command_to_ack_ms": stats_ms([r["seconds"] for r in rows]),
            "sources": {s: sum(r["source"] == s for r in rows) for s in {r["source"] for r in rows}},
            "codes": {str(c): sum(r["code"] == c for r in rows) for c in {r["code"] for r in rows}},
            "device_model_ms_p50": p50([r["device_model_ms"] for r in rows]),
            "cloud_leg_ms_p50": p50([r["cloud_ms"] for r in rows]),
            "server_ms_p50": p50([r["server_ms"] for r in rows]),
            "cloud_agrees_with_device": (
                sum(r["label"] == r["device_label"] for r in rows if r["device_label"] is not None)
                if any(r["device_label"] for r in rows)
                else None
            ),
        }
    fallback_groups = [g for g in groups if g.startswith(("stopped:", "killed:"))]
    return {
        "settings": {
            **timing,
            "max_wait_s": max_wait_s,
            "max_wait_s_reported": reported_wait,
            "rounds": args.requests,
            "fallbacks": args.fallbacks,
            "wavs": [w.name for w in wavs],
        },  # fmt: skip
        "server_start_s": round(server_start_s, 1),
        "groups": groups,
        "within_bound": all(
            groups[g]["command_to_ack_ms"]["max"] <= max_wait_s * 1000 + 1000 for g in fallback_groups
        ),
        "breaker_after": breaker_state,
        "samples": samples,
    }


# --------------------------------------------------------------------------------------------------
# Ray Serve beside the embedded app


class KeepAliveClient:
    """One client's HTTPS connection (kept open, opened again when the server closes it)."""

    def __init__(self, server) -> None:  # noqa: ANN001
        parts = urllib.parse.urlsplit(server.url)
        self.host, self.port, self.context = parts.hostname, parts.port, server.context()
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {server.token}"}
        self.conn: http.client.HTTPSConnection | None = None

    def post(self, path: str, body: bytes) -> tuple[int, float]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.context, timeout=120
                )
            t0 = time.perf_counter()
            try:
                self.conn.request("POST", path, body=body, headers=self.headers)
                response = self.conn.getresponse()
                response.read()
                return response.status, time.perf_counter() - t0
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def load(server, path: str, bodies: list[bytes], clients: int, per_client: int) -> dict[str, Any]:  # noqa: ANN001
    """``clients`` threads, each sending ``per_client`` requests back to back; wall time and latencies."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def run(c: int) -> None:
        client = KeepAliveClient(server)
        mine: list[float] = []
        try:
            client.post(path, bodies[c % len(bodies)])  # the connection and TLS, not timed
            start.wait()
            for i in range(per_client):
                status, seconds = client.post(path, bodies[(c * per_client + i) % len(bodies)])
                if status != 200:
                    errors.append(f"HTTP {status}")
                mine.append(seconds)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(threading.BrokenBarrierError):
                start.abort()
        finally:
            client.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"seconds": wall, "latencies": latencies, "errors": errors}


def same_requests(rec_items: list[str], wavs: list[Path]) -> list[tuple[str, str, Any, bool | str]]:
    """Requests both servers get, answers compared (tests/cloud/serve/test_ray.py's list, with
    this report's model ids): successes and refusals alike."""
    return [
        *[("POST", "/v1/recommendations", {"model": REC_MODEL, "history": rec_items[i : i + 4], "k": 5}, True) for i in (0, 7, 20, 33)],
        ("POST", "/v1/recommendations", {"model": REC_MODEL, "history": [], "k": 3}, True),
        ("POST", "/v1/recommendations", {"model": REC_MODEL, "history": ["i1"], "k": 50, "beam": 10}, True),
        *[("POST", "/v1/audio/classifications", {"model": SER_MODEL, "wav_b64": wav_b64(w)}, True) for w in wavs],
        ("POST", "/v1/audio/classifications", {"model": REC_MODEL, "wav_b64": "AAAA"}, True),
        ("POST", "/v1/chat/completions", {"model": "keye-vl-8b", "messages": [{"role": "user", "content": "hi"}]}, True),
        ("POST", "/v1/recommendations", {"model": REC_MODEL, "history": ["i1"]}, "wrong-token"),
        ("GET", "/v1/models", None, True),
    ]  # fmt: skip


def ray_vs_embedded(art: dict[str, Path], args: argparse.Namespace, commands: list[str]) -> dict[str, Any]:
    from tests.cloud.serve.conftest import ServerProcess, serve_init, without_timings

    work = fresh(args.work / "ray")
    rec_items = json.loads((art["rec_bundle"] / "rec" / "items.json").read_text())["ids"]
    wavs = test_wavs(art["wavs"], 8)
    port, ray_port = free_port(), free_port()
    embedded_config = serve_init(
        work / "cloud", f"run:{SER_MODEL}={art['ser_run']}", f"run:{REC_MODEL}={art['rec_run']}", port=port
    )
    data = yaml.safe_load(embedded_config.read_text())
    data.update(
        engine="ray", port=ray_port, ray={"num_replicas": 2, "num_cpus": 2, "num_cpus_per_replica": 1}
    )
    ray_config = work / "cloud" / "ray.yaml"
    ray_config.write_text(yaml.safe_dump(data, sort_keys=False))
    commands += [
        f"edgewise cloud serve-init {work / 'cloud'} --run {SER_MODEL}={art['ser_run']} --run {REC_MODEL}={art['rec_run']} --port {port}",
        f"edgewise cloud serve --config {embedded_config}",
        f"edgewise cloud serve --config {ray_config}   (the same with engine: ray, ray: {{num_replicas: 2, num_cpus: 2, num_cpus_per_replica: 1}}, port {ray_port})",
    ]
    with Cleanup() as cleanup:
        servers = {}
        startup = {}
        for name, config in (("embedded", embedded_config), ("ray", ray_config)):
            server = ServerProcess(config, work / f"{name}.log")
            t0 = time.monotonic()
            server.start(timeout=600)
            startup[name] = round(time.monotonic() - t0, 1)
            cleanup.add(stop_server, server)
            servers[name] = server
            say(f"ray: {name} up in {startup[name]:.1f} s")
        plain, ray_server = servers["embedded"], servers["ray"]

        compared, mismatches = 0, []
        for method, path, body, auth in same_requests(rec_items, wavs):
            a = plain.request(method, path, body, auth=auth)
            b = ray_server.request(method, path, body, auth=auth)
            compared += 1
            if a[0] != b[0] or without_timings(a[1]) != without_timings(b[1]):
                mismatches.append(
                    {"path": path, "model": (body or {}).get("model"), "embedded": a[0], "ray": b[0]}
                )
        pids = {ray_server.request("GET", "/health", auth=False)[1]["pid"] for _ in range(40)}

        endpoints = {
            "rec": ("/v1/recommendations", [json.dumps({"model": REC_MODEL, "history": rec_items[i : i + 5], "k": 10}).encode()
                                            for i in range(0, len(rec_items) - 5, 3)]),
            "ser": ("/v1/audio/classifications", [json.dumps({"model": SER_MODEL, "wav_b64": wav_b64(w)}).encode() for w in wavs]),
        }  # fmt: skip
        runs: dict[str, dict[str, list[dict]]] = {}
        for endpoint, (path, bodies) in endpoints.items():
            for r in range(args.rounds):
                order = ("embedded", "ray") if r % 2 == 0 else ("ray", "embedded")
                for name in order:
                    result = load(servers[name], path, bodies, args.clients, args.per_client)
                    runs.setdefault(endpoint, {}).setdefault(name, []).append(result)
                    n = args.clients * args.per_client
                    say(
                        f"ray: {endpoint} round {r + 1} {name}: {n / result['seconds']:.1f} req/s, {len(result['errors'])} errors"
                    )

    table = {}
    for endpoint, by_server in runs.items():
        table[endpoint] = {}
        for name, results in by_server.items():
            n = args.clients * args.per_client
            rates = [n / res["seconds"] for res in results]
            table[endpoint][name] = {
                "req_per_s": round(float(np.median(rates)), 1),
                "req_per_s_rounds": [round(x, 1) for x in rates],
                "latency_ms": stats_ms([s for res in results for s in res["latencies"]]),
                "errors": sum(len(res["errors"]) for res in results),
                "first_errors": [e for res in results for e in res["errors"]][:3],
            }
        e, r = table[endpoint]["embedded"], table[endpoint]["ray"]
        table[endpoint]["ray_over_embedded"] = {
            "req_per_s": round(r["req_per_s"] / e["req_per_s"], 3),
            "p50": round(r["latency_ms"]["p50"] / e["latency_ms"]["p50"], 3),
            "p99": round(r["latency_ms"]["p99"] / e["latency_ms"]["p99"], 3),
        }
    return {
        "settings": {
            "clients": args.clients,
            "per_client": args.per_client,
            "rounds": args.rounds,
            "replicas": 2,
            "ray_num_cpus": 2,
        },  # fmt: skip
        "startup_s": startup,
        "equal": {"compared": compared, "equal": compared - len(mismatches), "mismatches": mismatches},
        "ray_replica_pids_seen": len(pids),
        "throughput": table,
    }


# --------------------------------------------------------------------------------------------------
# the registry to a device


def registry(art: dict[str, Path], args: argparse.Namespace, commands: list[str]) -> dict[str, Any]:
    from edgewise.bundle import generate_keypair
    from edgewise.cloud.fleet.harness import IngestProcess
    from edgewise.cloud.serve.auth import hash_token, new_token, write_secret
    from edgewise.devtools.tls import self_signed_cert
    from tests.cloud.registry.test_rollout import registry_cli
    from tests.cloud.serve.conftest import ServerProcess
    from tests.edge.deploy.test_rollback_daemon import INT8_ONLY, with_unloadable_model
    from tests.edge.security.conftest import signed_copy

    work = fresh(args.work / "registry")
    device = "dev1"
    with Cleanup() as cleanup:
        broker = MosquittoBroker(workdir=work / "broker").start()
        cleanup.add(broker.close)
        key, pub = work / "keys" / "fleet.key", work / "keys" / "fleet.pub"
        key.parent.mkdir()
        generate_keypair(key, pub)
        src = work / "src"
        v1 = signed_copy(art["ser_bundle"], src / "v1", "1.0.0", key)
        v11 = signed_copy(art["ser_bundle"], src / "v11", "1.1.0", key)
        broken = with_unloadable_model(art["ser_bundle"], src / "ser-tiny-2.0.0", key)

        folder = work / "cloud"  # test_rollout.py's `cloud` fixture
        cert, _ = self_signed_cert(folder / "tls")
        token = new_token()
        (folder / "tokens.sha256").write_text(hash_token(token) + "\n")
        write_secret(folder / "client" / "token", token + "\n")
        config = {"host": "127.0.0.1", "port": free_port(), "models": [],
                  "mqtt": {"host": broker.host, "port": broker.port}, "fleet": {"store": "fleet.sqlite"},
                  "registry": {"root": "registry", "public_key": str(pub)}}  # fmt: skip
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        ingest_args = [
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            "--store",
            str(folder / "fleet.sqlite"),
        ]
        ingest = IngestProcess(ingest_args, work / "ingest.log")
        cleanup.add(ingest.close)
        ingest.wait_subscribed()
        server = ServerProcess(folder / "config.yaml", work / "serve.log").start()
        cleanup.add(stop_server, server)
        commands += [
            "python -m edgewise.cloud.fleet ingest " + " ".join(ingest_args),
            f"edgewise cloud serve --config {folder / 'config.yaml'}   (registry:, fleet:, mqtt: sections)",
        ]

        profile = work / "x86-int8-only.yaml"
        profile.write_text(INT8_ONLY)
        d = start_daemon(work / "device-root", v1, broker, work / "daemon", device, device=str(profile),
                         public_key=str(pub), download={"ca": str(cert)})  # fmt: skip
        cleanup.add(stop_daemon, d)
        d.wait_health(lambda h: h["ok"], timeout=180)
        commander = Commander(broker)
        cleanup.add(commander.close)

        def state() -> dict:
            status, body, _ = server.request("GET", f"/registry/v1/fleets/{FLEET}")
            if status != 200:
                return {}
            return next((r for r in body.get("devices", []) if r["device"] == device), {}) | {
                "target": body.get("target")
            }

        def wait(predicate, timeout: float, what: str) -> tuple[dict, float]:  # noqa: ANN001
            """(the device's row, perf_counter when it first matched)."""
            deadline = time.perf_counter() + timeout
            while time.perf_counter() < deadline:
                row = state()
                if predicate(row):
                    return row, time.perf_counter()
                time.sleep(0.05)
            raise RuntimeError(f"registry: timed out waiting for {what}: {state()}")

        wait(lambda r: r.get("running"), 120, "the store to learn the device")
        steps: dict[str, Any] = {}

        def cli(label: str, *cli_args: str) -> subprocess.CompletedProcess:
            t0 = time.perf_counter()
            result = registry_cli(server, *cli_args)
            steps[label] = {"seconds": round(time.perf_counter() - t0, 2), "exit": result.returncode,
                            "output": (result.stdout + result.stderr).strip().splitlines()[-1:]}  # fmt: skip
            if result.returncode != 0:
                raise RuntimeError(f"registry {' '.join(cli_args)}: {result.stdout}{result.stderr}")
            commands.append(
                f"edgewise registry {' '.join(cli_args)} --url {server.url} --token-file ... --ca ..."
            )
            return result

        cli("push 1.1.0", "push", str(v11))
        cli("push 2.0.0 (broken)", "push", str(broken))
        plan = (("1.1.0", "promote 1.1.0", "current"), ("2.0.0", "promote 2.0.0 (broken)", "failed"))
        for version, label, done in plan:
            t0 = time.perf_counter()
            cli(label, "promote", "ser-tiny", version, "--fleet", FLEET)
            row, at = wait(lambda r, v=version, s=done: r.get("state") == s and (r.get("target") or {}).get("version") == v,
                           180, f"{version} to be {done}")  # fmt: skip
            acked = commander.acks.get(row["target"]["command_id"])
            steps[label].update({
                "state": row["state"],
                "seconds_to_state": round(at - t0, 2),
                "seconds_to_device_ack": None if acked is None else round(acked[0] - t0, 2),
                "running": row.get("running"),
                "ack": row.get("ack"),
                "device_current": (work / "device-root" / "current").resolve().name,
            })  # fmt: skip
            say(f"registry: {label}: {done} after {at - t0:.1f} s")
    return {"device": f"{FLEET}/{device}", "steps": steps}


# --------------------------------------------------------------------------------------------------
# vLLM (not run here)


def vllm_note(args: argparse.Namespace, commands: list[str]) -> dict[str, Any]:
    from tests.cloud.serve.conftest import serve_init

    folder = fresh(args.work / "vllm") / "cloud"
    config = serve_init(folder, vllm_preset="keye-vl-8b")
    cmd = [
        sys.executable,
        "-m",
        "edgewise",
        "cloud",
        "serve",
        "--config",
        str(config),
        "--print-command",
        "--dummy-weights",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    commands.append(f"edgewise cloud serve-init {folder} --vllm-preset keye-vl-8b")
    commands.append(f"edgewise cloud serve --config {config} --print-command --dummy-weights")
    return {
        "ran": False,
        "why": "vLLM needs a GPU; this task was not lent a GPU machine, so vLLM was neither started nor measured",
        "vllm_on_path": shutil.which("vllm") is not None,
        "print_command_exit": out.returncode,
        "launch": out.stdout.strip() or out.stderr.strip(),
    }


# --------------------------------------------------------------------------------------------------
# the report


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for module in ("ray", "fastapi", "uvicorn", "paho.mqtt", "torch", "onnxruntime"):
        with contextlib.suppress(Exception):
            out[module] = __import__(module, fromlist=["__version__"]).__version__
    return out


GROUP_LABELS = {
    "live:device": "device only (its rule never declines)",
    "live:cloud-https": "cloud answers, https",
    "live:cloud-mqtt": "cloud answers, mqtt route (the server's bridge)",
    "live:device-nosync": "device only, its outbox with outbox_sync: normal (no fsync; for comparison)",
    "live:status": "a status command to the device daemon (no model: the command path alone)",
    "stopped:cloud-https": "server stopped (SIGSTOP), https: fallback",
    "stopped:cloud-mqtt": "server stopped (SIGSTOP), mqtt: fallback",
    "killed:cloud-https": "server killed (SIGKILL), https: fallback",
    "killed:cloud-mqtt": "server killed (SIGKILL), mqtt: fallback",
    "killed:breaker-opening": "server killed, breaker daemon: the 3 failures that open it",
    "breaker-open": "breaker open: fallback without asking",
}


def _v(value: Any) -> str:
    return "-" if value is None else str(value)


def _short(text: str, head: int = 110, tail: int = 45) -> str:
    """One line for a table cell: the start and the end (where the rollback is named)."""
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= head + tail + 5 else f"{text[:head]} ... {text[-tail:]}"


def _demote(markdown: str) -> list[str]:
    return [("#" + line) if line.startswith("#") else line for line in markdown.splitlines()]


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# The cloud half on this machine (issue 15)",
        "",
        f"Generated {report['created']} on {m['platform']}, {m['cpus']} CPUs (shared: load average "
        f"{m['loadavg_before'][0]:.1f} before, {m['loadavg_after'][0]:.1f} after), in {report['seconds']:.0f} s. "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        + ".",
        "",
        f"Models: the cloud's SER teacher `{report['models']['ser_run']}`, the devices' SER bundle "
        f"`{report['models']['ser_bundle']}`, the rec run `{report['models']['rec_run']}`.",
        "",
        "## What could not run here",
        "",
    ]
    lines += [f"- {line}" for line in report["not_here"]]
    c = report.get("cascade")
    if c:
        s = c["settings"]
        lines += [
            "",
            "## The cascade (a device daemon's infer over MQTT; command to ack)",
            "",
            f"Offload: timeout_s {s['timeout_s']}, retries {s['retries']}, backoff {s['backoff']['base_s']}-"
            f"{s['backoff']['max_s']} s; the bound the daemon reports, max_wait_s = {s['max_wait_s_reported']} s. "
            f"{s['rounds']} rounds over device / https / mqtt interleaved, {s['fallbacks']} fallbacks each; "
            f"server start {c['server_start_s']} s. Source: what the answers said they were.",
            "",
            "| path | n | p50 ms | p99 ms | max ms | device model p50 ms | cloud leg p50 ms | server's own p50 ms | sources (codes) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for group, g in c["groups"].items():
            st = g["command_to_ack_ms"]
            codes = ", ".join(f"{k}" for k in g["codes"] if k != "None")
            src = ", ".join(f"{k} {v}" for k, v in g["sources"].items() if k != "-") + (
                f" ({codes})" if codes else ""
            )
            lines.append(
                f"| {GROUP_LABELS.get(group, group)} | {st['n']} | {st['p50']} | {st['p99']} | {st['max']} | "
                f"{_v(g['device_model_ms_p50'])} | {_v(g['cloud_leg_ms_p50'])} | {_v(g['server_ms_p50'])} | {src} |"
            )
        live = c["groups"]
        dev, https = live["live:device"]["command_to_ack_ms"], live["live:cloud-https"]["command_to_ack_ms"]
        mq = live["live:cloud-mqtt"]["command_to_ack_ms"]
        waits = [
            r["cloud_ms"]
            for g, rows in c["samples"].items()
            if g.startswith(("stopped:", "killed:"))
            for r in rows
            if r["code"] == "timeout"
        ]
        bound_ms = s["max_wait_s_reported"] * 1000
        over = [w for w in waits if w > bound_ms + 10]
        lines += [
            "",
            f"Cloud-answered / device-only p50: https {https['p50'] / dev['p50']:.2f}x, mqtt {mq['p50'] / dev['p50']:.2f}x. "
            f"How long the device waited for a cloud that never answered (the result's offload.timings.cloud_ms, "
            f"{len(waits)} timeouts): median {np.median(waits):.0f} ms, max {max(waits):.0f} ms, against the bound "
            f"{bound_ms:.0f} ms; {len(waits) - len(over)} of {len(waits)} within 10 ms of it"
            + (
                f", {len(over)} over by "
                + (
                    f"{over[0] - bound_ms:.0f}"
                    if len(over) == 1
                    else f"{min(over) - bound_ms:.0f}-{max(over) - bound_ms:.0f}"
                )
                + " ms (the cascade's "
                "timers add up to the bound, so most likely scheduling delay on the loaded machine)"
                if over
                else ""
            )
            + f". Every fallback's command to ack within max_wait_s + 1 s: {'yes' if c['within_bound'] else 'NO'}; "
            f"the breaker daemon's breaker afterwards: {c['breaker_after']}.",
            "",
            "Command to ack includes the daemon's own command path (the `status` row: no model runs) and, on this "
            "machine, scheduling on 2 shared cores; the `outbox_sync: normal` row shows how much of it is the outbox's "
            "fsyncs.",
        ]
    ing = report.get("ingest")
    if ing:
        lines += ["", *_demote(ing["markdown"])]
    r = report.get("ray")
    if r:
        st = r["settings"]
        lines += [
            "",
            "## Ray Serve (2 replicas) beside the embedded app",
            "",
            f"The same serve folder (SER teacher run, rec run), both servers up at once (start: embedded "
            f"{r['startup_s']['embedded']} s, Ray {r['startup_s']['ray']} s). Same requests to both: "
            f"{r['equal']['equal']} of {r['equal']['compared']} answers equal (status and body, timings left out); "
            f"{r['ray_replica_pids_seen']} replicas answered /health. Load: {st['clients']} concurrent clients "
            f"(keep-alive HTTPS) x {st['per_client']} requests, {st['rounds']} rounds alternating the servers; "
            "req/s is the median of the rounds.",
            "",
            "| endpoint | server | req/s | p50 ms | p99 ms | errors | Ray / embedded |",
            "|---|---|---|---|---|---|---|",
        ]
        for endpoint, t in r["throughput"].items():
            ratio = t["ray_over_embedded"]
            for name in ("embedded", "ray"):
                row = t[name]
                extra = (
                    f"req/s {ratio['req_per_s']}x, p50 {ratio['p50']}x, p99 {ratio['p99']}x"
                    if name == "ray"
                    else ""
                )
                lines.append(
                    f"| {endpoint} | {name} | {row['req_per_s']} | {row['latency_ms']['p50']} | "
                    f"{row['latency_ms']['p99']} | {row['errors']} | {extra} |"
                )
        if r["equal"]["mismatches"]:
            lines += ["", f"Mismatches: {r['equal']['mismatches']}"]
    g = report.get("registry")
    if g:
        lines += [
            "",
            "## Registry to a device",
            "",
            f"Device {g['device']} on ser-tiny 1.0.0 (fleet-signed, int8-only profile). Times from the start of the "
            "`edgewise registry` command; the state is what `GET /registry/v1/fleets/lab` said (polled every 50 ms).",
            "",
            "| step | command s | until the device's ack s | until the registry shows it s | state | running | device's reason |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, step in g["steps"].items():
            running = step.get("running")
            lines.append(
                f"| {label} | {step['seconds']} | {step.get('seconds_to_device_ack', '')} | "
                f"{step.get('seconds_to_state', '')} | {step.get('state', '')} | "
                f"{'' if not running else running['name'] + ' ' + running['version']} | "
                f"{_short((step.get('ack') or {}).get('error') or '')} |"
            )
    v = report.get("vllm")
    if v:
        lines += [
            "",
            "## vLLM",
            "",
            v["why"] + ". The launch the preset writes (`--print-command --dummy-weights`):",
            "",
            "```",
            v["launch"],
            "```",
        ]
    carried = report.get("carried_over")
    if carried:
        lines += [
            "",
            "Carried over from an earlier run (`--merge`): "
            + ", ".join(f"{k} ({v})" for k, v in carried.items()),
        ]
    lines += ["", "## Commands", "", "```", *report["commands"], "```", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    ax = axes[0][0]
    c = report.get("cascade")
    if c:
        groups = list(c["groups"])
        p50s = [c["groups"][g]["command_to_ack_ms"]["p50"] for g in groups]
        maxes = [c["groups"][g]["command_to_ack_ms"]["max"] for g in groups]
        x = np.arange(len(groups))
        ax.bar(x - 0.2, p50s, 0.4, label="p50")
        ax.bar(x + 0.2, maxes, 0.4, label="max")
        ax.axhline(c["settings"]["max_wait_s_reported"] * 1000, color="red", ls="--", label="max_wait_s")
        ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("command to ack (ms)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_title("cascade: infer over MQTT" + ("" if c else " (skipped)"))

    ax = axes[0][1]
    ing = report.get("ingest")
    if ing:
        rows = ing["result"]["throughput"]
        names = [f"{r['store']}\n{r['workers']}w {r['mode']}" for r in rows]
        ax.bar(
            range(len(rows)),
            [r["msg_per_s"] for r in rows],
            color=["#4c72b0" if r["store"] == "sqlite" else "#dd8452" for r in rows],
        )
        ax.set_xticks(range(len(rows)), names, fontsize=7)
        ax.set_ylabel("messages/s stored")
    ax.set_title("ingest: Mosquitto -> store" + ("" if ing else " (skipped)"))

    r = report.get("ray")
    for ax, key, title in (
        (axes[1][0], "req_per_s", "requests/s"),
        (axes[1][1], "latency", "latency p50 / p99 (ms)"),
    ):
        if r:
            endpoints = list(r["throughput"])
            x = np.arange(len(endpoints))
            for i, name in enumerate(("embedded", "ray")):
                if key == "req_per_s":
                    ax.bar(
                        x + (i - 0.5) * 0.4,
                        [r["throughput"][e][name]["req_per_s"] for e in endpoints],
                        0.4,
                        label=name,
                    )
                else:
                    lat = [r["throughput"][e][name]["latency_ms"] for e in endpoints]
                    ax.bar(x + (i - 0.5) * 0.4, [v["p99"] for v in lat], 0.4, alpha=0.35, color=f"C{i}")
                    ax.bar(
                        x + (i - 0.5) * 0.4,
                        [v["p50"] for v in lat],
                        0.4,
                        label=f"{name} (p50; light: p99)",
                        color=f"C{i}",
                    )
            ax.set_xticks(x, endpoints)
            ax.legend(fontsize=8)
        ax.set_title(f"Ray Serve (2 replicas) vs embedded: {title}" + ("" if r else " (skipped)"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "cloud",
                        help="models, serve folders, logs (default benchmarks/work/cloud, git-ignored)")  # fmt: skip
    parser.add_argument(
        "--skip", action="append", default=[], choices=PARTS, help="leave a part out (repeatable)"
    )
    parser.add_argument(
        "--merge", action="store_true", help="carry skipped parts over from OUT/cloud_report.json"
    )
    parser.add_argument(
        "--ser-run", type=Path, help="the cloud's SER teacher run (default: the suite's tiny run)"
    )
    parser.add_argument("--ser-bundle", type=Path, help="the devices' SER bundle (default: the tiny run's)")
    parser.add_argument(
        "--rec-run", type=Path, help="the cloud's rec run (default: the suite's tiny rec run)"
    )
    parser.add_argument("--rec-bundle", type=Path, help="its bundle (for the item catalogue)")
    parser.add_argument(
        "--requests", type=int, default=30, help="cascade: rounds of infer per path (default 30)"
    )
    parser.add_argument(
        "--fallbacks", type=int, default=5, help="cascade: requests per fallback case (default 5)"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=1.0, help="cascade: offload.timeout_s (default 1.0)"
    )
    parser.add_argument(
        "--ingest-n", type=int, default=5000, help="ingest: messages per throughput run (default 5000)"
    )
    parser.add_argument("--ingest-stores", default="sqlite,postgresql")
    parser.add_argument("--clients", type=int, default=4, help="ray: concurrent clients (default 4)")
    parser.add_argument(
        "--per-client", type=int, default=25, help="ray: requests per client per round (default 25)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="ray: rounds per server and endpoint (default 3)"
    )
    parser.add_argument(
        "--render", action="store_true", help="only write the .md and .png again from OUT/cloud_report.json"
    )
    args = parser.parse_args()
    args.work = args.work.absolute()
    args.out = args.out.absolute()
    if args.render:
        report = json.loads((args.out / "cloud_report.json").read_text())
        write_report(args.out, "cloud_report", report, markdown(report))
        plot(report, args.out / "cloud_report.png")
        return 0
    os.chdir(REPO)

    started = time.monotonic()
    commands = [" ".join(["python", "benchmarks/cloud_report.py", *sys.argv[1:]])]
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": os.getloadavg(),
        },
        "versions": versions(),
    }
    art = artifacts(args, commands)
    report["models"] = {k: str(v) for k, v in art.items()}
    report["not_here"] = [
        "vLLM (Keye-VL-8B, the OneRec 8B checkpoint): it needs a GPU, and this task was not lent a GPU machine; "
        "only its launch command is recorded (section vLLM).",
        "The cloud's SER 'teacher' is the test suite's tiny run (93k parameters, 3 epochs on a tone corpus), and the "
        "devices' bundle is exported from it: the cascade's figures measure the path (MQTT, TLS, the breaker, the "
        "fallback), not a large teacher's cost or its gain in accuracy.",
        "One machine with 2 cores shared with long trainings: the broker, the server(s), the daemons and the clients "
        "compete for them, so absolute figures are pessimistic and ratios within one part are what to read.",
    ]
    parts = [p for p in PARTS if p not in args.skip]
    runners = {"cascade": cascade, "ray": ray_vs_embedded, "registry": registry, "vllm": vllm_note}
    for part in parts:
        t0 = time.monotonic()
        say(f"--- {part}")
        if part == "ingest":
            import cloud_ingest

            stores = tuple(s.strip() for s in args.ingest_stores.split(",") if s.strip())
            result = cloud_ingest.measure(args.ingest_n, stores, args.work)
            commands.append(
                f"(ingest) benchmarks/cloud_ingest.py measure(n={args.ingest_n}, stores={stores})"
            )
            report["ingest"] = {"result": result, "markdown": cloud_ingest.markdown(result)}
        else:
            report[part] = runners[part](art, args, commands) if part != "vllm" else vllm_note(args, commands)
        report[part]["part_seconds"] = round(time.monotonic() - t0, 1)
        say(f"--- {part} done in {time.monotonic() - t0:.0f} s")
    if args.merge and (args.out / "cloud_report.json").exists():
        old = json.loads((args.out / "cloud_report.json").read_text())
        report["carried_over"] = {}
        for part in args.skip:
            if part in old:
                report[part] = old[part]
                report["carried_over"][part] = old.get("created")
    report["machine"]["loadavg_after"] = os.getloadavg()
    report["seconds"] = round(time.monotonic() - started, 1)
    report["commands"] = commands
    write_report(args.out, "cloud_report", report, markdown(report))
    plot(report, args.out / "cloud_report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
