"""The fleet page end to end: real devices (TelemetryClient) publish through Mosquitto, the ingest
worker stores it, ``python -m edgewise cloud fleet --serve`` serves the page under uvicorn,
and headless Chromium renders it (the screenshot is kept in the test's tmp folder)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from edgewise.cloud.fleet.harness import REPO
from edgewise.cloud.fleet.ingest import IngestWorker
from edgewise.devtools.mosquitto import accepts_connections, free_port
from edgewise.edge.telemetry.client import TelemetryClient
from edgewise.edge.telemetry.schema import Percentiles, Telemetry
from tests.conftest import missing_tool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

XSS = "<script>document.title='owned'</script>"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    missing_tool("chromium is not installed (apt-get install chromium)")


def device(broker, tmp_path, name: str, model: tuple[str, str]) -> TelemetryClient:
    config = {
        "host": broker.host, "port": broker.port, "fleet": "lab", "device": name, "telemetry_qos": 1,
        "outbox_path": str(tmp_path / f"{name}.outbox"), "reconnect_min_s": 0.05, "reconnect_max_s": 0.2,
    }  # fmt: skip
    client = TelemetryClient(config, model={"name": model[0], "version": model[1]})
    client.start()
    assert client.wait_connected(10)
    return client


def report(client: TelemetryClient, n: int, *, now: float, base_ms: float) -> None:
    for i in range(n):
        ts = now - (n - i) * 10
        lat = base_ms + (i % 5)
        client.publish_telemetry(
            Telemetry(
                ts=ts,
                interval_s=10,
                inferences=20 + i,
                latency_ms=Percentiles(p50=lat, p90=lat * 1.5, p99=lat * 2),
            )
        )


@pytest.fixture
def fleet_store(store_url, make_broker, tmp_path, open_stores):
    """A store filled the real way: devices -> Mosquitto -> ingest worker. ``kitchen`` stays online
    (ser-tiny 1.1.0, 20 telemetry reports, events, an error); ``garage`` shuts down (offline)."""
    broker = make_broker()
    store = open_stores(store_url)
    stop = threading.Event()
    worker = IngestWorker(
        {"store": store_url, "host": broker.host, "port": broker.port, "client_id": "w1"}, store=store
    )
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    assert worker.wait_subscribed(10)
    now = time.time()
    kitchen = device(broker, tmp_path, "kitchen", ("ser-tiny", "1.1.0"))
    garage = device(broker, tmp_path, "garage", ("rec-small", "2.0.0"))
    try:
        report(kitchen, 20, now=now, base_ms=4.0)
        report(garage, 6, now=now - 60, base_ms=9.0)
        for i in range(4):
            kitchen.publish_event(label="happy" if i % 2 else XSS, latency_ms=4.0 + i, task="ser")
        garage.publish_event(task="rec", latency_ms=7.5, result={"items": [1, 2]})
        kitchen.publish_error("microphone unplugged", code="audio")
        assert kitchen.flush(10) and garage.flush(10)
        garage.close(flush_timeout=5)  # publishes the retained offline status, reason shutdown
        deadline = time.monotonic() + 20
        while True:
            counts = store.row_counts()
            states = {d["device"]: d["state"] for d in store.devices()}
            if counts["telemetry"] >= 26 and counts["events"] >= 6 and states.get("garage") == "offline":
                break
            assert time.monotonic() < deadline, (counts, states)
            time.sleep(0.1)
        yield store
    finally:
        kitchen.close(flush_timeout=1)
        garage.close(flush_timeout=0)
        stop.set()
        thread.join(20)


@pytest.fixture
def fleet_page(fleet_store):
    """``python -m edgewise cloud fleet --serve`` on a free port: the page alone, under uvicorn."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgewise", "cloud", "fleet", "--store", fleet_store_url(fleet_store),
         "--serve", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not accepts_connections("127.0.0.1", port):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the fleet page did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def fleet_store_url(store) -> str:
    return store.url if store.kind == "postgresql" else str(store.path)


def get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers["content-type"], response.read().decode()


# SQLite only: what the page shows comes from the store's queries, which tests/cloud/fleet/test_store.py
# runs on both stores
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_page_shows_online_and_offline_devices_with_their_models_and_charts(
    fleet_page, tmp_path, fleet_store
):
    browser = chromium()
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [*base, "--dump-dom", f"{fleet_page}/"], capture_output=True, text=True, timeout=90
    ).stdout
    assert "<h1>Fleet</h1>" in dom, dom[:500]
    rows = dict(
        re.findall(r'<tr class="device" data-fleet="lab" data-device="(\w+)"[^>]*>(.*?)</tr>', dom, re.S)
    )
    assert set(rows) == {"kitchen", "garage"}
    assert 'data-state="online"' in re.search(
        r'<tr class="device"[^>]*data-device="kitchen"[^>]*>', dom
    ).group(0)
    assert 'data-state="offline"' in re.search(
        r'<tr class="device"[^>]*data-device="garage"[^>]*>', dom
    ).group(0)
    assert "ser-tiny 1.1.0" in rows["kitchen"] and "online" in rows["kitchen"]
    assert "rec-small 2.0.0" in rows["garage"] and "offline (shutdown)" in rows["garage"]
    assert re.search(r">8\.0<.*>12\.0<.*>16\.0<", rows["kitchen"]), (
        "kitchen's newest p50/p90/p99 (8, 12, 16 ms) are not shown"
    )
    # the kitchen's charts: its 20 reports, three latency lines and the throughput line
    block = re.search(
        r'<div class="device-charts"[^>]*data-device="kitchen".*?</div>\s*(<svg.*?</svg>)(<svg.*?</svg>)',
        dom,
        re.S,
    )
    latency, throughput = block.group(1), block.group(2)
    assert 'data-chart="latency"' in latency and 'data-points="60"' in latency
    assert latency.count('class="series"') == 3
    assert 'data-chart="throughput"' in throughput and 'data-points="20"' in throughput
    # events, with what a device sent escaped: the script neither runs nor becomes an element
    assert "microphone unplugged" in dom and "&lt;script&gt;" in dom
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert title == "Fleet"
    shot = tmp_path / "fleet-page.png"
    subprocess.run(
        [*base, "--window-size=1400,2400", f"--screenshot={shot}", f"{fleet_page}/"],
        capture_output=True,
        timeout=90,
    )
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a device's own page
    dev = subprocess.run(
        [*base, "--dump-dom", f"{fleet_page}/devices/lab/kitchen"], capture_output=True, text=True, timeout=90
    ).stdout
    assert "<h1>lab/kitchen</h1>" in dev and 'data-chart="latency"' in dev and "1.1.0" in dev
    dev_shot = tmp_path / "device-page.png"
    subprocess.run(
        [*base, "--window-size=1400,1800", f"--screenshot={dev_shot}", f"{fleet_page}/devices/lab/kitchen"],
        capture_output=True,
        timeout=90,
    )
    print(f"\n{fleet_store.kind}: screenshots {shot} and {dev_shot}")


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_json_and_prometheus_endpoints_behind_the_page(fleet_page):
    kind, body = get(f"{fleet_page}/metrics")
    assert kind.startswith("text/plain; version=0.0.4")
    lines = body.splitlines()
    assert 'edgewise_device_online{fleet="lab",device="kitchen"} 1' in lines
    assert 'edgewise_device_online{fleet="lab",device="garage"} 0' in lines
    assert 'edgewise_fleet_devices{state="online"} 1' in lines
    assert 'edgewise_device_latency_seconds{fleet="lab",device="kitchen",quantile="0.5"} 0.008' in lines
    stored = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r'edgewise_ingest_stored_total\{worker="w1",kind="(\w+)"\} (\d+)', body)
    }
    assert stored["telemetry"] == 26 and stored["events"] == 6
    assert 'edgewise_ingest_rejected_total{worker="w1",reason="malformed"} 0' in lines
    import json

    devices = json.loads(get(f"{fleet_page}/api/devices")[1])["devices"]
    kitchen = next(d for d in devices if d["device"] == "kitchen")
    assert kitchen["model"] == "ser-tiny 1.1.0" and kitchen["latency_source"] == "telemetry"
    assert kitchen["throughput_per_s"] == pytest.approx(3.9)  # 39 inferences in the last 10 s window
    series = json.loads(get(f"{fleet_page}/api/devices/lab/kitchen/series")[1])["points"]
    assert len(series) == 20 and series[0]["ts"] < series[-1]["ts"]
    models = json.loads(get(f"{fleet_page}/api/models")[1])["device_models"]
    assert {(m["device"], m["task"], m["model_version"]) for m in models} == {
        ("kitchen", "ser", "1.1.0"),
        ("garage", "rec", "2.0.0"),
    }
    events = json.loads(get(f"{fleet_page}/api/events?type=error")[1])["events"]
    assert [e["message"] for e in events] == ["microphone unplugged"]
    with pytest.raises(urllib.error.HTTPError, match="404"):
        get(f"{fleet_page}/api/devices/lab/nobody")
