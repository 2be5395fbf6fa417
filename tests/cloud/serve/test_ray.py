"""The unchanged app as a Ray Serve deployment with 2 replicas (a local Ray with 2 CPUs, its HTTPS
proxy on 127.0.0.1) answers the same requests exactly as the standalone embedded server does.

Slow: one Ray start for the module (about 30 s on two busy cores), both servers in their own
processes (``python -m edgewise cloud serve``), the same config apart from engine and port.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
import yaml

from edgewise.devtools.mosquitto import free_port
from tests.cloud.serve.conftest import ServerProcess, serve_init, wav_b64, without_timings
from tests.conftest import require_module

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def servers(serve_deps, ser_bundle, rec_bundle, tmp_path_factory):
    require_module("ray.serve", "ray[serve] is not installed (the ray extra)")
    folder = tmp_path_factory.mktemp("ray") / "cloud"
    embedded = serve_init(
        folder, f"bundle:ser-tiny={ser_bundle}", f"bundle:rec-tiny={rec_bundle}", port=free_port()
    )
    data = yaml.safe_load(embedded.read_text())
    data.update(
        engine="ray", port=free_port(), ray={"num_replicas": 2, "num_cpus": 2, "num_cpus_per_replica": 1}
    )
    ray_config = folder / "ray.yaml"
    ray_config.write_text(yaml.safe_dump(data))
    ray_server = ServerProcess(ray_config, folder.parent / "ray.log")
    plain = ServerProcess(embedded, folder.parent / "embedded.log")
    t0 = time.monotonic()
    with ray_server, plain:
        print(f"both servers up in {time.monotonic() - t0:.1f} s")
        yield plain, ray_server
    print(ray_server.log_text()[-3000:])


def requests(rec_bundle: Path, edge_corpus: Path) -> list[tuple[str, str, object, bool | str]]:
    items = json.loads((Path(rec_bundle) / "rec" / "items.json").read_text())["ids"]
    wavs = sorted(Path(edge_corpus).glob("wavs/test*.wav"))[:2]
    return [
        *[("POST", "/v1/recommendations", {"model": "rec-tiny", "history": items[i : i + 4], "k": 5}, True) for i in (0, 7, 20)],
        ("POST", "/v1/recommendations", {"model": "rec-tiny", "history": [], "k": 3}, True),
        ("POST", "/v1/recommendations", {"model": "rec-tiny", "history": ["i1"], "k": 50, "beam": 10}, True),
        *[("POST", "/v1/audio/classifications", {"model": "ser-tiny", "wav_b64": wav_b64(w)}, True) for w in wavs],
        ("POST", "/v1/audio/classifications", {"model": "rec-tiny", "wav_b64": "AAAA"}, True),
        ("POST", "/v1/chat/completions", {"model": "keye-vl-8b", "messages": [{"role": "user", "content": "hi"}]}, True),
        ("POST", "/v1/recommendations", {"model": "rec-tiny", "history": ["i1"]}, "wrong-token"),
        ("GET", "/v1/models", None, True),
        ("GET", "/health", None, False),
    ]  # fmt: skip


def test_ray_serve_answers_as_the_standalone_app(servers, rec_bundle, edge_corpus):
    plain, ray_server = servers
    for method, path, body, auth in requests(rec_bundle, edge_corpus):
        a = plain.request(method, path, body, auth=auth)
        b = ray_server.request(method, path, body, auth=auth)
        assert a[0] == b[0], (path, body, a[1], b[1])
        assert without_timings(a[1]) == without_timings(b[1]), (path, body)
        assert "x-edgewise-timings" in b[2]


def test_both_replicas_answer(servers):
    _, ray_server = servers
    pids = {ray_server.request("GET", "/health", auth=False)[1]["pid"] for _ in range(40)}
    assert len(pids) == 2, pids


def test_latency_side_by_side(servers, rec_bundle):
    """Not a benchmark (2 busy cores): p50 of one client's requests to each, printed for the record."""
    items = json.loads((Path(rec_bundle) / "rec" / "items.json").read_text())["ids"]
    body = {"model": "rec-tiny", "history": items[:5], "k": 5}
    for name, server in zip(("embedded", "ray (2 replicas)"), servers):
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            assert server.request("POST", "/v1/recommendations", body)[0] == 200
            times.append((time.perf_counter() - t0) * 1000)
        print(
            f"{name}: p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms over 20 sequential requests"
        )
