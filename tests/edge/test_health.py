"""Process and system figures the daemon reports (psutil, with /sys for the temperature)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from edgewise.edge.health import CpuMeter, rss_mb, temperature_c
from tests.conftest import require_module
from tests.edge.audio.conftest import run_python


def test_rss_of_this_process_and_of_another_one():
    assert 10 < rss_mb() < 10_000
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; block = bytearray(80_000_000); block[::4096] = b'x' * len(block[::4096]); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while (rss_mb(child.pid) or 0) < 80 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rss_mb(child.pid) >= 80  # MB of 10^6 bytes, as the telemetry schema says
    finally:
        child.communicate(b"", timeout=10)
    assert rss_mb(child.pid) is None  # gone: unknown, not an error


def test_cpu_meter_tells_busy_from_idle():
    meter = CpuMeter()
    time.sleep(0.3)
    idle = meter.percent()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # 0.3 s of CPU time, however long the shared machine takes
        pass
    busy = meter.percent()
    assert idle is not None and busy is not None
    assert idle < 20 < busy


def test_temperature_falls_back_to_the_thermal_zones(tmp_path):
    psutil = require_module("psutil")
    for zone, milli in (("thermal_zone0", "45000"), ("thermal_zone1", "51234"), ("thermal_zone2", "garbage")):
        (tmp_path / zone).mkdir()
        (tmp_path / zone / "temp").write_text(milli + "\n")
    sensors = getattr(psutil, "sensors_temperatures", dict)()
    from_psutil = [t.current for entries in sensors.values() for t in entries]
    expected = max(from_psutil) if from_psutil else 51.234
    assert temperature_c(tmp_path) == pytest.approx(expected, abs=5 if from_psutil else 1e-9)
    if not from_psutil:
        assert temperature_c(tmp_path / "none") is None  # nothing readable: unknown


def test_without_psutil_the_figures_are_unknown_not_wrong():
    code = (
        "import sys; sys.modules['psutil'] = None\n"
        "from edgewise.edge.health import CpuMeter, rss_mb\n"
        "print(rss_mb(), CpuMeter().percent())"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "None"]
