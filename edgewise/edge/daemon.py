"""The device daemon: runs the installed model on live audio and reports everything over MQTT.

    edgewise daemon --config /opt/edgewise/daemon.yaml

Threads and what they own:

* main: audio source -> VAD segmenter -> pipeline -> ``events`` (the audio never waits for a reload);
* reloader: on SIGHUP, a ``reload``/``rollback``/``deploy`` command or at start, loads what
  ``ROOT/current`` points at in the background, self-tests it, then swaps it in (load, then switch);
  a model that fails keeps the old one running and is reported (``ROOT/health.json``, an ``error``
  event); at start, a current model that does not load is rolled back to the last good one;
* telemetry: every ``telemetry_interval_s``, counts, latency percentiles, CPU, memory, temperature;
* the telemetry client's own threads: the outbox pump and the command worker.

SIGTERM or SIGINT stops the audio, flushes the outbox (``shutdown_flush_s``), publishes the
``offline`` status and exits 0. The health report ``ROOT/health.json`` is what ``edge-deploy``
waits for after it switches ``current`` and sends SIGHUP::

    {"pid": 1234, "ok": true, "model": "ser-tiny/1.1.0", "ts": 1795925592.8, "error": null}
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from edgewise.audio import resample, to_mono
from edgewise.bundle import load_bundle, sha256_file
from edgewise.config import StrictModel, load_config
from edgewise.devices import load_profile
from edgewise.edge.audio import AudioInputConfig, UtteranceSegmenter, build_vad, open_source
from edgewise.edge.audio.sources import WavFileSource
from edgewise.edge.health import CpuMeter, InferenceStats, rss_mb, temperature_c
from edgewise.edge.install import (
    activate,
    current_install,
    deploy_lock,
    install_bundle,
    mark_good,
    recover,
    rollback,
)
from edgewise.edge.pipelines import pipeline_for_task
from edgewise.errors import AudioError, ConfigError, EdgewiseError
from edgewise.fsutil import write_text_atomic

log = logging.getLogger(__name__)

PID_FILE = "daemon.pid"
HEALTH_FILE = "health.json"


class DownloadSettings(StrictModel):
    max_mb: float = Field(500, gt=0)
    timeout_s: float = Field(60, gt=0)
    schemes: list[str] = Field(default_factory=lambda: ["http", "https"])


class DaemonConfig(StrictModel):
    """``daemon.yaml``: the device, where models are installed, MQTT and audio settings."""

    device: str = "x86-local"  # a device profile name or YAML path
    root: Path  # the install root that edge-deploy writes
    public_key: Path | None = None  # when set, every bundle must carry a valid signature
    threads: int | None = Field(None, ge=1, le=64)
    telemetry_interval_s: float = Field(10.0, gt=0)
    shutdown_flush_s: float = Field(10.0, ge=0)
    exit_when_input_ends: bool = False  # file and stdin sources: stop after the last utterance
    retry_audio_s: float = Field(10.0, gt=0)  # a missing microphone is retried this often
    mqtt: dict[str, Any]  # a TelemetryConfig; outbox_path defaults to ROOT/outbox.db
    audio: AudioInputConfig = AudioInputConfig()
    download: DownloadSettings = DownloadSettings()
    max_infer_seconds: float = Field(60.0, gt=0)  # longest audio an ``infer`` command may carry


def load_daemon_config(path: str | Path) -> tuple[DaemonConfig, Any]:
    """The daemon config and its validated telemetry config (errors name the file and field)."""
    from edgewise.edge.telemetry.client import TelemetryConfig

    cfg = load_config(DaemonConfig, path)
    root = cfg.root.expanduser()
    cfg.root = root
    mqtt = {"outbox_path": str(root / "outbox.db"), **cfg.mqtt}
    telemetry = TelemetryConfig.load(mqtt, name=f"{path}: mqtt")
    load_profile(cfg.device)  # an unknown device fails now, listing the valid ones
    return cfg, telemetry


class Daemon:
    def __init__(self, config: DaemonConfig, telemetry_config: Any) -> None:
        self.cfg = config
        self.root = config.root
        self.profile = load_profile(config.device)
        self.telemetry_config = telemetry_config
        self.stats = InferenceStats()
        self.cpu = CpuMeter()
        self.client: Any = None
        self._pipeline: Any = None
        self._pipeline_key: str | None = None
        self._swap_lock = threading.Lock()  # guards _pipeline and _pipeline_key
        self._reload_lock = threading.Lock()  # one load at a time
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._started = time.monotonic()
        self._vad_path: Path | None = None
        self.audio_blocked = False

    # ----------------------------------------------------------------------------------------------
    # life cycle

    def run(self) -> int:
        from edgewise.edge.telemetry.client import TelemetryClient

        self.root.mkdir(parents=True, exist_ok=True)
        for line in recover(self.root):
            log.warning("recovered: %s", line)
        write_text_atomic(self.root / PID_FILE, f"{os.getpid()}\n")
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGTERM, self._on_stop_signal),
                (signal.SIGINT, self._on_stop_signal),
                (signal.SIGHUP, self._on_reload_signal),
            )
        }
        self.client = TelemetryClient(self.telemetry_config, command_handler=self._on_command)
        self.client.start()
        threads = [
            threading.Thread(target=self._reloader, name="reloader", daemon=True),
            threading.Thread(target=self._telemetry_loop, name="telemetry", daemon=True),
        ]
        audio = threading.Thread(target=self._audio_thread, name="audio", daemon=True)
        try:
            self._start_model()
            for t in threads:
                t.start()
            audio.start()
            # The main thread only waits: signal handlers run here at once, while a read from stdin
            # or a microphone in the audio thread may block; that thread is left behind at exit.
            while not self._stop.wait(0.5):
                pass
        finally:
            self._stop.set()
            self._reload_requested.set()
            for t in threads:
                if t.is_alive():
                    t.join(timeout=5)
            # let an utterance in flight publish its event before the outbox closes (a thread
            # blocked in a read of stdin or a device is left behind: see audio_blocked)
            if audio.is_alive():
                audio.join(timeout=2.0)
            self._publish_telemetry()  # the last interval is not lost either
            flushed = self.client.close(flush_timeout=self.cfg.shutdown_flush_s)
            log.info("stopped; outbox %s", "flushed" if flushed else "kept on disk for the next start")
            with self._swap_lock:
                if self._pipeline is not None:
                    self._pipeline.close()
            pid_file = self.root / PID_FILE
            if pid_file.is_file() and pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.audio_blocked = audio.is_alive()  # still in a blocking read of stdin or a device
        return 0

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        self._stop.set()

    def _on_reload_signal(self, signum: int, frame: Any) -> None:
        self._reload_requested.set()

    # ----------------------------------------------------------------------------------------------
    # models

    def _write_health(self, ok: bool, model: str | None, error: str | None) -> dict[str, Any]:
        report = {"pid": os.getpid(), "ok": ok, "model": model, "ts": time.time(), "error": error}
        write_text_atomic(self.root / HEALTH_FILE, json.dumps(report) + "\n")
        return report

    def _self_test(self, pipeline: Any) -> None:
        """One inference on a second of quiet noise: the model loads, runs and gives finite output."""
        if pipeline.input_kind == "audio":
            audio = np.random.default_rng(0).normal(0, 0.01, 16000).astype(np.float32)
            result = pipeline.process(audio)
            probs = np.asarray(list(result.get("probabilities", {}).values()), dtype=np.float64)
            if probs.size == 0 or not np.isfinite(probs).all():
                raise EdgewiseError(f"self-test gave no finite probabilities: {result}")

    def reload(self, reason: str) -> dict[str, Any]:
        """Load what ``current`` names (if it is not already running), self-test it, switch to it."""
        with self._reload_lock:
            target = current_install(self.root)
            if target is None:
                return self._write_health(
                    False, None, f"nothing installed under {self.root}: deploy a bundle"
                )
            key = f"{target.parent.name}/{target.name}"
            if key == self._pipeline_key:
                return self._write_health(True, key, None)
            log.info("loading %s (%s)", key, reason)
            t0 = time.perf_counter()
            try:
                bundle = load_bundle(target, public_key=self.cfg.public_key)
                pipeline = pipeline_for_task(bundle.manifest.task).from_bundle(
                    bundle, self.profile, threads=self.cfg.threads, engine_dir=self.root / "engines"
                )
                self._self_test(pipeline)
            except Exception as exc:  # any failure keeps the running model; it is reported, not raised
                message = str(exc) if isinstance(exc, EdgewiseError) else f"{type(exc).__name__}: {exc}"
                log.error("could not load %s: %s", key, message)
                if self.client is not None:
                    self.client.publish_error(f"could not load {key}: {message}", code="model_load")
                return self._write_health(False, key, message)
            vad = bundle.artifacts("vad") if "vad" in bundle.manifest.models else []
            with self._swap_lock:
                old = self._pipeline
                self._pipeline, self._pipeline_key = pipeline, key
                self._vad_path = bundle.artifact_path(vad[0]) if vad else None
            if old is not None:
                old.close()
            mark_good(self.root, key)
            name, version = bundle.manifest.name, bundle.manifest.version
            if self.client is not None:
                self.client.set_status(model={"name": name, "version": version})
            log.info(
                "running %s: %s (%.0f ms)",
                key,
                pipeline.describe()["backend"],
                (time.perf_counter() - t0) * 1000,
            )
            return self._write_health(True, key, None)

    def _start_model(self) -> None:
        report = self.reload("start")
        if report["ok"] or report["model"] is None:
            return
        try:  # a model that cannot start (a switch interrupted by a power cut) falls back
            rollback(self.root, reason=f"failed to start: {report['error']}", failed=report["model"])
        except EdgewiseError as exc:
            log.error("no model to fall back to: %s", exc)
            return
        self.reload("rollback after a failed start")

    def _reloader(self) -> None:
        while not self._stop.is_set():
            self._reload_requested.wait()
            self._reload_requested.clear()
            if self._stop.is_set():
                return
            self.reload("SIGHUP")

    # ----------------------------------------------------------------------------------------------
    # audio

    def _snapshot(self) -> tuple[Any, str | None]:
        with self._swap_lock:
            return self._pipeline, self._pipeline_key

    def _infer(self, audio: np.ndarray, source: dict[str, Any]) -> dict[str, Any] | None:
        pipeline, key = self._snapshot()
        if pipeline is None:
            self.stats.add_error()
            log.warning("no model loaded: utterance of %.2f s skipped", audio.size / 16000)
            return None
        try:
            result = pipeline.process(audio)
        except EdgewiseError as exc:
            self.stats.add_error()
            self.client.publish_error(str(exc), code="inference", detail={"source": source})
            return None
        self.stats.add(result["latency_ms"], result.get("label"))
        name, version = key.split("/", 1)
        try:
            self.client.publish_event(
                task=pipeline.task,
                model={"name": name, "version": version},
                label=result.get("label"),
                probabilities=result.get("probabilities", {}),
                latency_ms=result["latency_ms"],
                source=source,
                result={k: v for k, v in result.items() if k not in ("label", "probabilities")},
            )
        except EdgewiseError as exc:  # only when the client closed under a late utterance at shutdown
            log.warning("event for an utterance of %.2f s not stored: %s", audio.size / 16000, exc)
        return result

    def _segmenter(self) -> UtteranceSegmenter:
        cfg = self.cfg.audio
        vad_path = cfg.vad_model or self._snapshot_vad()
        vad = build_vad(cfg.vad, vad_path, cfg.threshold)  # None for vad: none
        return UtteranceSegmenter.from_config(cfg, vad)

    def _snapshot_vad(self) -> Path | None:
        with self._swap_lock:
            return self._vad_path

    def _audio_thread(self) -> None:
        try:
            self._audio_loop()
        except Exception:  # a bug in the audio path must not leave a daemon that looks alive
            log.exception("audio thread failed; stopping")
            self._stop.set()

    def _audio_loop(self) -> None:
        cfg = self.cfg.audio
        reported = False
        while not self._stop.is_set():
            try:
                segmenter = self._segmenter()
                with open_source(cfg) as source:
                    reported = False
                    if isinstance(source, WavFileSource):
                        self._run_files(source, segmenter)
                    else:
                        self._run_stream(source, segmenter, cfg.source)
            except (AudioError, ConfigError) as exc:
                if not reported:
                    log.error("audio input: %s", exc)
                    self.client.publish_error(f"audio input: {exc}", code="audio")
                    reported = True
                self._stop.wait(self.cfg.retry_audio_s)
                continue
            if cfg.source in ("file", "stdin"):
                log.info("audio input ended")
                if self.cfg.exit_when_input_ends:
                    self._stop.set()
                return

    def _run_files(self, source: WavFileSource, segmenter: UtteranceSegmenter) -> None:
        for path, audio in source.files():
            if self._stop.is_set():
                return
            segmenter.reset()
            for utt in segmenter.segment([audio]):
                self._infer(
                    utt.audio,
                    {
                        "kind": "file",
                        "name": str(path),
                        "start_s": utt.start_s,
                        "end_s": utt.end_s,
                        "sample_rate": 16000,
                    },
                )

    def _run_stream(self, source: Any, segmenter: UtteranceSegmenter, kind: str) -> None:
        for block in source:
            if self._stop.is_set():
                break
            for utt in segmenter.push(block):
                self._infer(
                    utt.audio,
                    {"kind": kind, "start_s": utt.start_s, "end_s": utt.end_s, "sample_rate": 16000},
                )
        for utt in segmenter.flush():
            self._infer(
                utt.audio, {"kind": kind, "start_s": utt.start_s, "end_s": utt.end_s, "sample_rate": 16000}
            )

    # ----------------------------------------------------------------------------------------------
    # telemetry

    def _publish_telemetry(self) -> None:
        try:
            self.client.publish_telemetry(
                **self.stats.take(),
                cpu_percent=self.cpu.percent(),
                rss_mb=rss_mb(),
                temperature_c=temperature_c(),
            )
        except EdgewiseError as exc:  # the client is closing
            log.debug("telemetry not published: %s", exc)

    def _telemetry_loop(self) -> None:
        while not self._stop.wait(self.cfg.telemetry_interval_s):
            self._publish_telemetry()

    # ----------------------------------------------------------------------------------------------
    # commands (run one at a time on the telemetry client's command thread)

    def status(self) -> dict[str, Any]:
        from edgewise.edge.install import status

        pipeline, key = self._snapshot()
        return {
            **status(self.root),
            "running": key,
            "pipeline": pipeline.describe() if pipeline is not None else None,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "rss_mb": rss_mb(),
            "torch_loaded": "torch" in sys.modules,  # devices have no room for it: must stay False
        }

    def _on_command(self, command: Any) -> Any:
        action, args = command.action, command.args
        if action == "status":
            return self.status()
        if action == "reload":
            return self._checked(self.reload("command"))
        if action == "rollback":
            with deploy_lock(self.root):
                rollback(self.root, reason=f"command {command.id}")
                return self._checked(self.reload("rollback"))
        if action == "deploy":
            return self._deploy(args)
        if action == "infer":
            return self._infer_command(args)
        raise ConfigError(f"unknown action {action!r}")

    @staticmethod
    def _checked(report: dict[str, Any]) -> dict[str, Any]:
        if not report["ok"]:
            raise EdgewiseError(f"{report['model']}: {report['error']}")
        return report

    def _deploy(self, args: dict[str, Any]) -> dict[str, Any]:
        url = args.get("url")
        if not isinstance(url, str) or not url:
            raise ConfigError("deploy needs args.url: the bundle archive to download")
        path = self._download(url, args.get("sha256"))
        with deploy_lock(self.root):
            try:
                installed = install_bundle(self.root, path, public_key=self.cfg.public_key)
            finally:
                shutil.rmtree(path.parent, ignore_errors=True)
            key = f"{installed.parent.name}/{installed.name}"
            previous = activate(self.root, installed)
            report = self.reload(f"deploy {key}")
            if report["ok"]:
                return {**report, "previous": previous}
            back = rollback(self.root, reason=f"health check failed: {report['error']}", failed=key)
            self.reload("rollback after a failed deploy")
        raise EdgewiseError(f"{key} failed its health check ({report['error']}); rolled back to {back}")

    def _download(self, url: str, sha256: str | None) -> Path:
        scheme = urllib.parse.urlparse(url).scheme
        if scheme not in self.cfg.download.schemes:
            raise ConfigError(
                f"deploy url {url!r}: scheme {scheme!r} not allowed ({', '.join(self.cfg.download.schemes)})"
            )
        limit = int(self.cfg.download.max_mb * 1024 * 1024)
        folder = Path(tempfile.mkdtemp(prefix="download-", dir=self.root))
        dest = folder / (Path(urllib.parse.urlparse(url).path).name or "bundle.tar.gz")
        try:
            with (
                urllib.request.urlopen(url, timeout=self.cfg.download.timeout_s) as response,
                open(dest, "wb") as out,
            ):
                total = 0
                while chunk := response.read(1 << 20):
                    total += len(chunk)
                    if total > limit:
                        raise ConfigError(
                            f"deploy url {url}: larger than download.max_mb ({self.cfg.download.max_mb:g} MB)"
                        )
                    out.write(chunk)
            if sha256 is not None and sha256_file(dest) != sha256:
                raise ConfigError(
                    f"deploy url {url}: sha256 {sha256_file(dest)} differs from the expected {sha256}"
                )
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise EdgewiseError(f"deploy url {url}: download failed: {exc}") from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return dest

    def _infer_command(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{"wav_b64": ...}`` (a WAV file) or ``{"pcm16_b64": ..., "sample_rate": 16000}``."""
        import soundfile as sf

        try:
            if "wav_b64" in args:
                audio, sr = sf.read(
                    io.BytesIO(base64.b64decode(args["wav_b64"], validate=True)), dtype="float32"
                )
            elif "pcm16_b64" in args:
                raw = base64.b64decode(args["pcm16_b64"], validate=True)
                audio, sr = (
                    np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768,
                    int(args.get("sample_rate", 16000)),
                )
            else:
                raise ConfigError(
                    "infer needs args.wav_b64 (a WAV file) or args.pcm16_b64 with args.sample_rate"
                )
        except (ValueError, TypeError, sf.LibsndfileError) as exc:
            raise AudioError(f"infer: the audio could not be decoded ({exc})") from None
        audio = to_mono(audio) if audio.ndim > 1 else audio
        if audio.size / sr > self.cfg.max_infer_seconds:
            raise AudioError(
                f"infer: {audio.size / sr:.1f} s of audio is over max_infer_seconds ({self.cfg.max_infer_seconds:g})"
            )
        if sr != 16000:
            audio = resample(audio, sr, 16000)
        result = self._infer(audio.astype(np.float32), {"kind": "command", "sample_rate": 16000})
        if result is None:
            raise EdgewiseError("no model is loaded" if self._snapshot()[0] is None else "inference failed")
        return result


def daemon_run(config_path: str | Path) -> int:
    cfg, telemetry = load_daemon_config(config_path)
    daemon = Daemon(cfg, telemetry)
    code = daemon.run()
    if daemon.audio_blocked:
        # Everything is flushed and closed; only the audio thread is still blocked in a read, and
        # the interpreter cannot finalize around it (it aborts on the stdin lock). Leave now.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code
