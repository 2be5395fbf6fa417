"""Versioned installs: atomic switch, immutable versions, rollback, recovery after a power cut."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from edgewise.cli import main
from edgewise.edge.install import (
    InstallError,
    activate,
    current_install,
    install_bundle,
    mark_good,
    recover,
    rollback,
    status,
)
from tests.edge.daemon.conftest import bundle_version


@pytest.mark.slow
def test_install_switch_and_roll_back(ser_bundle, tmp_path):
    root = tmp_path / "root"
    v1 = install_bundle(root, ser_bundle)
    assert v1 == root / "models" / "ser-tiny" / "1.0.0" and current_install(root) is None
    assert install_bundle(root, ser_bundle) == v1  # the same version again is a no-op
    activate(root, v1)
    mark_good(root, "ser-tiny/1.0.0")
    v2 = install_bundle(root, bundle_version(ser_bundle, tmp_path, "1.1.0"))
    assert activate(root, v2) == "ser-tiny/1.0.0"
    assert os.readlink(root / "current") == "models/ser-tiny/1.1.0"  # relative: the root can move
    assert rollback(root, reason="health check failed", failed="ser-tiny/1.1.0") == "ser-tiny/1.0.0"
    st = status(root)
    assert st["current"] == "ser-tiny/1.0.0" and st["failed"] == ["ser-tiny/1.1.0"]
    with pytest.raises(InstallError, match="nothing to roll back to"):
        rollback(root)  # 1.1.0 failed, so it is no rollback target


@pytest.mark.slow
def test_a_version_is_immutable(ser_bundle, tmp_path):
    root = tmp_path / "root"
    install_bundle(root, ser_bundle)
    other = bundle_version(ser_bundle, tmp_path, "1.0.0", task="ser")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["labels"] = list(reversed(manifest["labels"]))
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InstallError, match="versions are immutable"):
        install_bundle(root, other)


@pytest.mark.slow
def test_recover_removes_partial_copies_and_repairs_a_broken_link(ser_bundle, tmp_path):
    root = tmp_path / "root"
    v1 = install_bundle(root, ser_bundle)
    activate(root, v1)
    mark_good(root, "ser-tiny/1.0.0")
    partial = root / "models" / "ser-tiny" / ".1.1.0.partial-999"
    shutil.copytree(ser_bundle, partial)  # what a power cut during a copy leaves
    (root / ".current.tmp-999").symlink_to("models/ser-tiny/1.1.0")  # and during a switch
    (root / "current").unlink()
    (root / "current").symlink_to("models/ser-tiny/9.9.9")  # a link to nothing
    done = recover(root)
    assert not partial.exists() and not (root / ".current.tmp-999").is_symlink()
    assert current_install(root) == v1 and any("now ser-tiny/1.0.0" in d for d in done)


def test_the_systemd_unit_runs_reloads_and_stops_the_daemon(tmp_path, capsys):
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text(f"device: rpi5\nroot: {tmp_path}\nmqtt: {{fleet: lab, device: pi1}}\n")
    assert main(["daemon", "install-unit", "--config", str(cfg), "--print"]) == 0
    unit = capsys.readouterr().out
    assert f"daemon --config {cfg}" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "User=edgewise" in unit and "Restart=on-failure" in unit and "KillSignal=SIGTERM" in unit
    out = tmp_path / "edgewise.service"
    assert main(["daemon", "install-unit", "--config", str(cfg), "--out", str(out), "--user", "pi"]) == 0
    assert "User=pi" in out.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"device: toaster\nroot: {tmp_path}\nmqtt: {{fleet: lab, device: pi1}}\n")
    assert main(["daemon", "install-unit", "--config", str(bad), "--print"]) == 2
    assert "unknown device 'toaster'; known devices:" in capsys.readouterr().err
