"""The fleet router mounted inside another app, the charts and the Prometheus text, the terminal
table (``edgewise cloud fleet``), the ingest command's config errors, and no torch anywhere."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import pytest

from edgewise.cli import main as cli_main
from edgewise.cloud.fleet.charts import line_chart, nice_max
from edgewise.cloud.fleet.classify import Message, classify
from edgewise.cloud.fleet.commands import fleet_add_arguments, fleet_run
from edgewise.cloud.fleet.harness import REPO
from edgewise.cloud.fleet.metrics import escape_label
from edgewise.edge.telemetry.schema import Event, ModelRef, Percentiles, Status, Telemetry, encode

pytestmark = pytest.mark.timeout(120)


def fill(store, now: float) -> None:
    def m(device, kind, payload, at):
        return classify(Message(f"edgewise/lab/{device}/{kind}", encode(payload), received_at=at))

    store.write(
        [
            m("pi-1", "status", Status(state="online", model=ModelRef(name="ser-tiny", version="1.0.0"), ts=now - 50), now - 50),
            m("pi-2", "status", Status(state="offline", reason="connection lost", ts=now - 40), now - 40),
            m("pi-3", "status", Status(state="online", ts=now - 900), now - 900),  # silent since: stale
            *[
                m("pi-1", "telemetry", Telemetry(ts=now - 30 + i, interval_s=1, inferences=i,
                                                 latency_ms=Percentiles(p50=2, p90=3, p99=4)), now - 30 + i)
                for i in range(5)
            ],
            m("pi-2", "events", Event(id="a", label='say "hi" <b>', latency_ms=10.0), now - 41),
            m("pi-2", "events", Event(id="b", label="x", latency_ms=30.0), now - 41),
        ],
        worker="w1",
    )  # fmt: skip


@pytest.fixture
def filled(sqlite_url, open_stores):
    store = open_stores(sqlite_url)
    fill(store, time.time())
    return store


def test_the_router_mounts_under_a_prefix_of_another_app(filled):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from edgewise.cloud.fleet.app import fleet_router

    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    app.include_router(fleet_router(filled, refresh_s=None), prefix="/fleet")
    client = TestClient(app)
    page = client.get("/fleet/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/fleet/devices/lab/pi-1"' in page.text and 'href="/fleet/metrics"' in page.text
    events = page.text.split("<h2>Events</h2>")[1].split("<h2>")[0]
    assert "say &quot;hi&quot; &lt;b&gt;" in events and "<b>" not in events
    assert 'http-equiv="refresh"' not in page.text
    assert client.get("/fleet/devices/lab/pi-1").status_code == 200
    assert client.get("/fleet/devices/lab/nope").status_code == 404
    assert client.get("/fleet/metrics").headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert client.get("/fleet/api/events", params={"type": "bogus"}).status_code == 422
    assert client.get("/health").json() == {"status": "ok"}
    states = {d["device"]: d["state"] for d in client.get("/fleet/api/devices").json()["devices"]}
    assert states == {"pi-1": "online", "pi-2": "offline", "pi-3": "stale"}
    pi2 = client.get("/fleet/api/devices/lab/pi-2").json()
    assert pi2["latency_source"] == "events" and pi2["latency_ms"] == {"p50": 10.0, "p90": 30.0, "p99": 30.0}


def test_create_fleet_app_refuses_a_store_that_does_not_exist(tmp_path):
    from edgewise.cloud.fleet.app import create_fleet_app
    from edgewise.cloud.fleet.store import StoreError

    with pytest.raises(StoreError, match="no such store"):
        create_fleet_app(tmp_path / "nothing.sqlite")
    assert not (tmp_path / "nothing.sqlite").exists()


def test_charts_scale_break_at_gaps_and_say_when_there_is_nothing():
    assert [nice_max(v) for v in (0.7, 3, 12, 4999)] == [1, 5, 20, 5000]
    svg = line_chart(
        [("p50", [(0, 1.0), (10, 2.0), (20, None), (30, 3.0), (40, 4.0)], "#000")],
        title="latency",
        unit="ms",
        chart="latency",
    )
    assert svg.count("<polyline") == 2 and 'data-points="4"' in svg and "<title>latency (ms)</title>" in svg
    assert "no data yet" in line_chart([("x", [], "#000")], title="t", unit="u", chart="c")


def test_prometheus_label_values_are_escaped():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def run_fleet(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    fleet_add_arguments(parser)
    return fleet_run(parser.parse_args(argv))


def test_cloud_fleet_prints_the_device_table(filled, capsys):
    assert run_fleet(["--store", str(filled.path), "--events", "5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == [
        "fleet",
        "device",
        "state",
        "model",
        "p50",
        "ms",
        "p90",
        "ms",
        "p99",
        "ms",
        "inf/s",
        "last",
        "seen",
    ]
    pi1 = next(line for line in lines if " pi-1 " in line)
    assert "online" in pi1 and "ser-tiny 1.0.0" in pi1 and "2.0" in pi1 and "4.00" in pi1
    assert "offline (connection lost)" in next(line for line in lines if " pi-2 " in line)
    assert "stale" in next(line for line in lines if " pi-3 " in line)
    assert "ingest: 10 received, 10 stored, 0 duplicates, 0 rejected" in out
    assert 'say "hi" <b>' in out
    assert run_fleet(["--store", str(filled.path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["device"]: d["state"] for d in data["devices"]} == {
        "pi-1": "online",
        "pi-2": "offline",
        "pi-3": "stale",
    }


def test_command_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert cli_main(["cloud", "fleet", "--store", str(tmp_path / "none.sqlite")]) == 2
    assert "no such store" in capsys.readouterr().err
    assert cli_main(["cloud", "ingest", "--group", "a/b", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "field 'group': value error, a share group name has no '/'" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "cloud",
                "ingest",
                "--password-file",
                str(tmp_path / "pw"),
                "--store",
                str(tmp_path / "s.sqlite"),
            ]
        )
        == 2
    )
    assert "a password needs a username" in capsys.readouterr().err
    assert cli_main(["cloud", "ingest", "--fleet", "la#b", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "field 'fleet'" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "cloud",
                "ingest",
                "--devices",
                str(tmp_path / "missing.txt"),
                "--store",
                str(tmp_path / "s.sqlite"),
            ]
        )
        == 2
    )
    assert "cannot read the device list" in capsys.readouterr().err
    assert cli_main(["cloud", "fleet", "--store", str(tmp_path / "s.sqlite"), "--serve", "localhost"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert cli_main(["cloud", "fleet", "--store", str(tmp_path / "s.sqlite"), "--serve", "0.0.0.0:8090"]) == 2
    assert "loopback only" in capsys.readouterr().err


def test_the_fleet_package_never_imports_torch():
    code = (
        "import pkgutil, importlib, sys, edgewise.cloud.fleet as f\n"
        "for m in pkgutil.iter_modules(f.__path__):\n"
        "    if m.name != '__main__': importlib.import_module(f'edgewise.cloud.fleet.{m.name}')\n"
        "print(sorted(x for x in ('torch', 'matplotlib', 'numpy.testing') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
