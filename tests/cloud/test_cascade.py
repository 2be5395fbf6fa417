"""The cascade end to end, nothing faked: a Mosquitto broker, ``edgewise cloud serve`` (a folder
written by serve-init: its self-signed certificate and token) serving the SER teacher run, and a
device daemon running the exported bundle whose ``offload:`` points at that server and declines
every utterance (``ser.below: 1``), so each ``infer`` command over MQTT (a real WAV) is asked of
the cloud.

- over HTTPS, the answer is the cloud's: ``source: "cloud"`` and the label and scores the server
  gives for the same audio, the device's own answer kept beside it;
- over the MQTT route the server's bridge answers the same way (counted as ``transport="mqtt"``);
- the server stopped (SIGSTOP: it accepts connections and never answers) and then killed
  (SIGKILL): the answers are the device's (``device-fallback``, with the reason) within the bound
  the daemon reports (``max_wait_s``), measured from command to ack; then the breaker opens and the
  answers come back at once, with nobody asked.

The server is shared by the module (it loads torch and the run once); the last test kills it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from edgewise.cloud.serve.service import SER_PATH
from edgewise.devtools.mosquitto import MosquittoBroker, free_port
from edgewise.edge.infer_request import decode_infer_audio
from edgewise.edge.offload.wire import check_ser_reply, ser_request
from edgewise.errors import MissingDependencyError
from tests.cloud.serve.conftest import ServerProcess, edit_config, serve_deps, serve_init, wav_b64  # noqa: F401
from tests.conftest import missing_tool
from tests.edge.daemon.conftest import TOPICS, ack_for, command, daemons, root  # noqa: F401  (fixtures)
from tests.edge.telemetry.conftest import subscribe  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MODEL = "ser-teacher"
TIMING = {"timeout_s": 1.0, "retries": 1, "backoff": {"base_s": 0.05, "max_s": 0.2, "jitter": 0.5}}
MAX_WAIT_S = 1.0 * 2 + 0.05  # timeout_s * (retries + 1) + the one backoff ceiling
MARGIN_S = 1.5  # the command and the ack over MQTT, the device's model, a busy machine


@pytest.fixture(scope="module")
def mqtt_broker(tmp_path_factory):
    try:
        broker = MosquittoBroker(workdir=tmp_path_factory.mktemp("cascade-broker"))
    except MissingDependencyError as exc:
        missing_tool(str(exc))
    with broker:
        yield broker


@pytest.fixture(scope="module")
def cloud(serve_deps, tiny_run, mqtt_broker, tmp_path_factory):  # noqa: F811
    """``edgewise cloud serve`` with the teacher run and the MQTT bridge, as serve-init writes it."""
    folder = tmp_path_factory.mktemp("cascade") / "cloud"
    config = serve_init(folder, f"run:{MODEL}={tiny_run}", port=free_port())
    edit_config(config, mqtt={"host": mqtt_broker.host, "port": mqtt_broker.port})
    server = ServerProcess(config, folder.parent / "serve.log").start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)  # a test that failed while it was stopped
    server.stop()


@pytest.fixture(scope="module")
def wavs(edge_corpus) -> list[Path]:
    found = sorted(Path(edge_corpus).glob("wavs/test*.wav"))
    return [found[0], found[len(found) // 2]]


def site(server: ServerProcess) -> dict:
    """The daemon's ``offload:`` for this server: the files serve-init wrote for clients."""
    folder = server.config.parent
    return {
        "url": server.url,
        "token_file": str(folder / "client" / "token"),
        "ca_file": str(folder / "tls" / "server.pem"),
        **TIMING,
    }


def cloud_answer(server: ServerProcess, wav: Path) -> dict:
    """What the server says about the audio the daemon decodes from ``wav`` (asked directly)."""
    audio = decode_infer_audio({"wav_b64": wav_b64(wav)}, max_seconds=60)
    status, body, _ = server.request("POST", SER_PATH, ser_request(MODEL, audio))
    assert status == 200, body
    return check_ser_reply(body, server.url)


def infer(broker, sub, wav: Path, cmd_id: str):
    """(the ack, seconds from publishing the command to receiving its ack)."""
    t0 = time.perf_counter()
    command(broker, "infer", {"wav_b64": wav_b64(wav)}, cmd_id)
    ack = ack_for(sub, cmd_id, timeout=60)
    return ack, time.perf_counter() - t0


def assert_cloud_answered(ack, expected: dict) -> None:
    assert ack.ok, ack.error
    result = ack.result
    assert result["source"] == "cloud", result
    assert result["label"] == expected["label"]
    assert result["probabilities"] == pytest.approx(expected["probabilities"], abs=2e-6)
    info = result["offload"]
    assert info["why"].startswith("confidence") and info["code"] is None and info["attempts"] == 1
    assert info["device"]["label"] in expected["probabilities"]  # the device's own answer, kept
    assert info["timings"]["cloud_server"]["total_ms"] > 0  # the server's own timings came back


def test_the_mqtt_route_is_answered_by_the_servers_bridge(
    cloud,
    mqtt_broker,
    root,  # noqa: F811  (fixtures imported above)
    daemons,  # noqa: F811
    subscribe,  # noqa: F811
    wavs,
):
    folder = cloud.config.parent
    offload = {"route": "mqtt", "token_file": str(folder / "client" / "token"), **TIMING,
               "ser": {"model": MODEL, "below": 1.0}}  # fmt: skip
    sub = subscribe(mqtt_broker, TOPICS)
    d = daemons(root, mqtt_broker, {"source": "none"}, offload=offload).start()
    assert d.wait_health(lambda h: h["ok"], timeout=60)["ok"]
    sub.wait_for(lambda ps: any(p.type == "status" and p.state == "online" for p in ps), timeout=30)

    ack, elapsed = infer(mqtt_broker, sub, wavs[0], "m1")
    assert_cloud_answered(ack, cloud_answer(cloud, wavs[0]))
    assert ack.result["offload"]["route"] == "mqtt"
    print(f"\nover mqtt: the cloud's answer, command to ack {elapsed * 1000:.0f} ms")
    status, metrics, _ = cloud.request("GET", "/metrics")
    assert status == 200
    answered = [line for line in metrics.decode().splitlines() if 'transport="mqtt"' in line]
    assert any(f'endpoint="{SER_PATH}"' in line and 'status="200"' in line for line in answered), metrics
    assert d.stop() == 0


def test_the_cloud_answers_then_the_device_falls_back_in_bounded_time_and_the_breaker_opens(
    cloud,
    mqtt_broker,
    root,  # noqa: F811  (fixtures imported above)
    daemons,  # noqa: F811
    subscribe,  # noqa: F811
    wavs,
):
    offload = {
        **site(cloud),
        "breaker": {"failures": 2, "cooldown_s": 600},
        "ser": {"model": MODEL, "below": 1.0},
    }  # fmt: skip  (below 1: every utterance is asked)
    sub = subscribe(mqtt_broker, TOPICS)
    d = daemons(root, mqtt_broker, {"source": "none"}, offload=offload).start()
    assert d.wait_health(lambda h: h["ok"], timeout=60)["ok"]
    command(mqtt_broker, "status", cmd_id="s1")
    state = ack_for(sub, "s1").result["offload"]
    assert state["max_wait_s"] == pytest.approx(MAX_WAIT_S) and state["breaker"] == "closed"
    assert state["route"] == cloud.url

    device_label = {}
    for i, wav in enumerate(wavs):
        ack, elapsed = infer(mqtt_broker, sub, wav, f"c{i}")
        assert_cloud_answered(ack, cloud_answer(cloud, wav))
        assert ack.result["offload"]["route"] == "http"
        device_label[wav] = ack.result["offload"]["device"]["label"]
        print(f"\nover https: the cloud's answer, command to ack {elapsed * 1000:.0f} ms")

    # stopped: the kernel still accepts the connection, the server never answers
    os.kill(cloud.proc.pid, signal.SIGSTOP)
    ack, elapsed = infer(mqtt_broker, sub, wavs[0], "stopped")
    assert ack.ok and ack.result["source"] == "device-fallback", ack.result
    assert ack.result["offload"]["code"] == "timeout" and ack.result["offload"]["attempts"] == 2
    assert ack.result["label"] == device_label[wavs[0]] and "device" not in ack.result["offload"]
    assert MAX_WAIT_S - 0.1 <= elapsed <= MAX_WAIT_S + MARGIN_S, elapsed
    print(
        f"server stopped: the device's answer after {elapsed * 1000:.0f} ms (bound {MAX_WAIT_S * 1000:.0f} ms)"
    )

    # killed: nothing listens; the second failed request opens the breaker
    os.killpg(cloud.proc.pid, signal.SIGKILL)
    cloud.proc.wait(10)
    ack, elapsed = infer(mqtt_broker, sub, wavs[1], "killed")
    assert ack.ok and ack.result["source"] == "device-fallback", ack.result
    assert (
        ack.result["offload"]["code"] == "unreachable" and "Traceback" not in ack.result["offload"]["reason"]
    )
    assert ack.result["label"] == device_label[wavs[1]]
    assert elapsed <= MAX_WAIT_S + MARGIN_S, elapsed
    print(f"server killed: the device's answer after {elapsed * 1000:.0f} ms")

    for i, wav in enumerate(wavs):
        ack, elapsed = infer(mqtt_broker, sub, wav, f"open{i}")
        assert ack.ok and ack.result["source"] == "device-fallback", ack.result
        info = ack.result["offload"]
        assert info["code"] == "breaker_open" and info["attempts"] == 0 and info["timings"]["cloud_ms"] == 0
        assert elapsed < 1.0, elapsed  # nobody is asked: the device's own speed
        print(f"breaker open: the device's answer after {elapsed * 1000:.0f} ms")
    command(mqtt_broker, "status", cmd_id="s2")
    assert ack_for(sub, "s2").result["offload"]["breaker"] == "open"
    assert d.stop() == 0
