"""scripts/setup.sh checks the Python version before it installs or changes anything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_setup(tmp_path: Path, version: str) -> subprocess.CompletedProcess:
    """setup.sh with PYTHON pointing at a stand-in interpreter that reports ``version``."""
    fake = tmp_path / "python3.fake"
    major, minor = (int(x) for x in version.split(".")[:2])
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-V" ]; then echo "Python {version}"; exit 0; fi\n'
        f"exec python3 -c 'import sys; sys.exit(0 if ({major}, {minor}) >= (3, 10) else 1)'\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake)}
    return subprocess.run(
        [str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, env=env, timeout=60
    )


def test_an_old_python_is_refused_up_front_with_its_version(tmp_path):
    result = run_setup(tmp_path, "3.9.18")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"setup: error: edgewise needs Python 3.10 or newer; '{tmp_path / 'python3.fake'}' is Python 3.9.18 "
        "(set PYTHON=/path/to/python3.X)"
    )


def test_a_missing_interpreter_is_named(tmp_path):
    env = {**os.environ, "PYTHON": "python3.404"}
    result = subprocess.run(
        [str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 2
    assert "no 'python3.404' on PATH; edgewise needs Python 3.10 or newer" in result.stderr
