"""Fixtures for edge-deploy: two versions of a real bundle, a stand-in daemon, a loopback sshd."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from edgewise.edge.deploy.cli import main
from tests.loopback_sshd import sshd  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def inventory_file(tmp_path, monkeypatch):
    """Every test gets its own inventory; ~/.config is never touched."""
    path = tmp_path / "inventory" / "devices.json"
    monkeypatch.setenv("EDGEWISE_INVENTORY", str(path))
    return path


def with_version(src: Path, dest: Path, version: str) -> Path:
    """A copy of a bundle folder with another manifest version (the artifacts' sha256 still hold)."""
    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["version"] = version
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dest


@pytest.fixture(scope="session")
def bundles(ser_bundle, tmp_path_factory):
    """v1: the shared test bundle (folder, with its archive beside); v2: a copy with version 2.0.0."""
    out = tmp_path_factory.mktemp("deploy-bundles")
    return {"v1": ser_bundle, "v2": with_version(ser_bundle, out / "ser-tiny-2.0.0", "2.0.0")}


V1, V2 = "ser-tiny/1.0.0", "ser-tiny/2.0.0"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def current_key(root: Path) -> str | None:
    link = root / "current"
    if not link.is_symlink():
        return None
    target = (root / os.readlink(link)).resolve()
    return f"{target.parent.name}/{target.name}"


def state(root: Path) -> dict:
    return json.loads((root / "state.json").read_text())


@pytest.fixture
def device_root(tmp_path):
    """An install root on "the device" (this machine) whose venv/bin/edge-deploy is this project's."""
    root = tmp_path / "device-root"
    (root / "venv" / "bin").mkdir(parents=True)
    (root / "venv" / "bin" / "edge-deploy").symlink_to(Path(sys.executable).parent / "edge-deploy")
    return root
