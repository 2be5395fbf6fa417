"""edge-deploy on the device itself: pre-flight, install, switch, health check, automatic rollback."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgewise.devices import list_profiles

from .conftest import V1, V2, current_key, run_cli, state

pytestmark = pytest.mark.slow  # the bundle comes from a (small) training run


def deploy(capsys, root, bundle, *extra):
    return run_cli(capsys, "--device", "local", "--root", root, bundle, *extra)


@pytest.fixture
def root_with_v1(tmp_path, bundles, capsys):
    root = tmp_path / "root"
    assert deploy(capsys, root, bundles["v1"])[0] == 0
    return root


def test_list_devices_is_a_table_of_every_profile():
    exe = Path(sys.executable).parent / "edge-deploy"
    out = subprocess.run([exe, "--list-devices"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "ARCH",
        "ACCELERATOR",
        "PREFERRED",
        "RUNTIME",
        "THREADS",
        "MEMORY",
        "INSTALL",
        "ROOT",
    ]
    assert [ln.split()[0] for ln in lines[1:-1]] == list(list_profiles())
    jetson = next(ln for ln in lines if ln.startswith("jetson-orin-nano"))
    assert jetson.split()[:5] == ["jetson-orin-nano", "aarch64", "cuda", "tensorrt-onnx", "fp16"]
    assert "1024 MB" in jetson and "/opt/edgewise" in jetson
    assert lines[-1] == "aliases: jetson = jetson-orin-nano, rpi = rpi5, local = x86-local"


def test_unknown_device_lists_the_valid_ones(capsys, tmp_path, bundles):
    rc, out, err = run_cli(capsys, "--device", "toaster", "--root", tmp_path / "r", bundles["v1"])
    assert rc == 2 and out == ""
    assert (
        err == f"edge-deploy: error: unknown device 'toaster'; known devices: {', '.join(list_profiles())}\n"
    )
    assert not (tmp_path / "r").exists()


def test_first_deploy_without_a_daemon_is_checked_in_process(capsys, tmp_path, bundles):
    root = tmp_path / "root"
    rc, out, err = deploy(capsys, root, bundles["v1"])
    assert rc == 0, err
    assert "no daemon running" in out and "runs in-process: models/ser.fp32.onnx" in out
    assert out.splitlines()[-1].startswith(f"deployed {V1} to x86-local at {root} in ")
    assert current_key(root) == V1
    assert state(root)["last_good"] == V1


def test_a_second_version_switches_and_keeps_the_first_for_rollback(capsys, root_with_v1, bundles):
    rc, out, err = deploy(capsys, root_with_v1, bundles["v2"])
    assert rc == 0, err
    assert f"switched current: {V1} -> {V2}" in out and f"previous {V1}" in out.splitlines()[-1]
    assert current_key(root_with_v1) == V2
    st = state(root_with_v1)
    assert (st["installed"], st["previous"], st["last_good"]) == ([V1, V2], V1, V2)


def test_deploying_the_running_version_again_changes_nothing(capsys, root_with_v1, bundles):
    before = (root_with_v1 / "state.json").read_text()
    rc, out, _ = deploy(capsys, root_with_v1, bundles["v1"])
    assert rc == 0 and "already running" in out.splitlines()[-1]
    assert (root_with_v1 / "state.json").read_text() == before


def test_rollback_and_status(capsys, root_with_v1, bundles):
    assert deploy(capsys, root_with_v1, bundles["v2"])[0] == 0
    rc, out, err = run_cli(capsys, "rollback", "--device", "local", "--root", root_with_v1)
    assert rc == 0, err
    assert out.splitlines()[-1] == f"rolled back x86-local at {root_with_v1} to {V1}"
    assert current_key(root_with_v1) == V1
    rc, out, _ = run_cli(capsys, "status", "--device", "local", "--root", root_with_v1, "--json")
    info = json.loads(out)
    assert rc == 0 and info["device"] == "x86-local" and info["daemon_pid"] is None
    assert (info["current"], info["previous"], info["installed"]) == (V1, V2, [V1, V2])
    rc, out, _ = run_cli(capsys, "status", "--device", "local", "--root", root_with_v1)
    assert rc == 0 and f"current    {V1}" in out and "daemon     not running" in out


def test_status_of_a_root_with_nothing_installed(capsys, tmp_path):
    rc, out, err = run_cli(capsys, "status", "--device", "local", "--root", tmp_path / "nothing")
    assert (
        rc == 2
        and err.strip()
        == f"edge-deploy: error: {tmp_path / 'nothing'}: nothing installed here (no such folder)"
    )


def test_a_tampered_bundle_is_refused_and_current_is_unchanged(capsys, root_with_v1, bundles, tmp_path):
    bad = shutil.copytree(bundles["v2"], tmp_path / "tampered")
    onnx = bad / "models" / "ser.int8-dynamic.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")
    rc, out, err = deploy(capsys, root_with_v1, bad)
    assert rc == 2 and "sha256 mismatch" in err and len(err.strip().splitlines()) == 1
    assert current_key(root_with_v1) == V1
    assert not (root_with_v1 / "models" / "ser-tiny" / "2.0.0").exists()


def test_a_tflite_only_bundle_on_a_tensorrt_only_device_is_refused(capsys, tmp_path, bundles):
    bundle = shutil.copytree(bundles["v1"], tmp_path / "tflite-only")
    manifest = json.loads((bundle / "manifest.json").read_text())
    classifier = manifest["models"]["classifier"]
    for art in classifier["artifacts"]:
        if art["format"] != "tflite":
            (bundle / art["path"]).unlink()
    classifier["artifacts"] = [a for a in classifier["artifacts"] if a["format"] == "tflite"]
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    profile = tmp_path / "trt-box.yaml"
    profile.write_text(
        "name: trt-box\ndescription: TensorRT only\narch: x86_64\naccelerator: cuda\n"
        "runtimes:\n  - {format: tensorrt-onnx, precision: fp16}\n  - {format: tensorrt-onnx, precision: int8, quant: static}\n"
        "threads: 2\nmemory_budget_mb: 256\ninstall_root: /opt/edgewise\n"
    )
    root = tmp_path / "root"
    rc, out, err = run_cli(capsys, "--device", profile, "--root", root, bundle)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert (
        "ser-tiny 1.0.0 is a bundle for another runtime/architecture: trt-box (x86_64, accelerator cuda)"
        in err
    )
    assert "runs tensorrt-onnx fp16, tensorrt-onnx int8 (static)" in err
    assert "the bundle's 'classifier' model has tflite fp32, tflite int8 (dynamic)" in err
    assert not (root / "models").exists() and current_key(root) is None


@pytest.mark.skipif(platform.machine() != "x86_64", reason="needs a machine that is not the Pi")
def test_a_local_deploy_for_another_architecture_points_to_host(capsys, tmp_path, bundles):
    rc, _, err = run_cli(capsys, "--device", "rpi5", "--root", tmp_path / "r", bundles["v1"])
    assert rc == 2
    assert "device rpi5 is aarch64 but this machine is x86_64: to deploy to the device add --host" in err


def test_with_a_key_only_a_bundle_signed_by_it_is_installed(capsys, tmp_path, bundles):
    from edgewise.bundle import generate_keypair, sign_manifest

    generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    signed = shutil.copytree(bundles["v2"], tmp_path / "ser-tiny-2.0.0")
    sign_manifest(signed, tmp_path / "fleet.key")
    root = tmp_path / "root"
    rc, _, err = deploy(capsys, root, bundles["v1"], "--key", tmp_path / "fleet.pub")  # unsigned
    assert rc == 2 and "manifest.sig" in err and current_key(root) is None
    rc, out, err = deploy(capsys, root, signed, "--key", tmp_path / "fleet.pub")
    assert rc == 0, err
    assert f"{V2}: verified (5 artifacts, signature verified)" in out and current_key(root) == V2


def test_a_second_deploy_on_the_same_root_waits_its_turn(capsys, root_with_v1, bundles):
    from edgewise.edge.install import deploy_lock

    with deploy_lock(root_with_v1):  # as if another edge-deploy were half-way through
        rc, _, err = deploy(capsys, root_with_v1, bundles["v2"])
    assert rc == 2 and f"another deploy (pid {os.getpid()}) is working on {root_with_v1}" in err
    assert current_key(root_with_v1) == V1
    assert deploy(capsys, root_with_v1, bundles["v2"])[0] == 0
