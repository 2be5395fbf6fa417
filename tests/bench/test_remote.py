"""--host: the benchmark runs on "the device" (this machine, through a loopback sshd) and comes back."""

from __future__ import annotations

import json
import sys

import pytest

from edgewise.bench.commands import main
from edgewise.bench.environment import EMULATED_MARKER_ENV
from edgewise.edge.deploy import inventory
from edgewise.errors import ConfigError

from .conftest import QUICK, bench

NOTE = "emulated under qemu-user: the device's architecture and software, not its speed"


def test_a_benchmark_over_ssh_comes_back_labelled_with_the_device(sshd, bench_bundle, tmp_path, capsys):
    rc = main(
        [
            str(bench_bundle),
            "--out",
            str(tmp_path),
            "--device",
            "local",
            *sshd["flags"],
            "--remote-python",
            sys.executable,
            *QUICK,
            "--formats",
            "onnx",
            "--precisions",
            "fp32",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert f"copying {bench_bundle.name}.tar.gz" in out  # the archive beside the folder, not a new one
    assert f"[{sshd['host']}] onnx fp32: p50" in out  # the device's own summary, streamed
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["device"]["name"] == "x86-local" and report["device"]["host"].startswith(sshd["host"])
    assert report["device"]["label"] == f"x86-local ({sshd['host']})"
    assert report["rows"][0]["status"] == "ok" and report["rows"][0]["latency_ms"]["p50"] > 0
    assert "on x86-local (" in (tmp_path / "bench.md").read_text().splitlines()[0]
    assert report["emulated"] is None  # this machine has no marker: real hardware, no label


def test_a_board_named_from_the_inventory_is_benchmarked_and_labelled_emulated(
    sshd, bench_bundle, tmp_path, capsys
):
    """The device is addressed by its inventory name only: address, port, identity, known_hosts and
    profile come from the record (as `edgewise board start` writes it). "The device" is this machine,
    which must not carry the real /etc/edgewise-emulated: its Python is started through a wrapper that
    sets EDGEWISE_EMULATED_MARKER to a temporary marker file, which the device-side bench reads
    instead (sshd does not pass the client's environment on)."""
    marker = tmp_path / "edgewise-emulated"
    marker.write_text(NOTE + "\n")
    python = tmp_path / "device-python"
    python.write_text(f'#!/bin/sh\n{EMULATED_MARKER_ENV}={marker} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    inventory.update(
        "loopback-board",
        sshd["host"],
        sshd["port"],
        profile="x86-local",
        emulated=NOTE,
        ssh={
            "identity": str(sshd["dir"] / "user_key"),
            "known_hosts": str(sshd["dir"] / "known_hosts"),
            "strict_host_key_checking": "accept-new",
        },
    )
    out_dir = tmp_path / "out"
    argv = [bench_bundle, "--out", out_dir, "--host", "loopback-board", "--remote-python", python, *QUICK]
    rc = main([str(a) for a in [*argv, "--formats", "onnx", "--precisions", "fp32"]])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert f"[{sshd['host']}] onnx fp32: (emulated timings) p50" in out  # the device's own summary
    assert f"EMULATED: {NOTE}." in out and "No device-profile order is suggested" in out
    report = json.loads((out_dir / "bench.json").read_text())
    assert report["device"]["name"] == "x86-local"  # the profile, from the record: no --device given
    assert report["device"]["host"] == f"{sshd['host']}:{sshd['port']}"  # the recorded port, not 22
    assert report["device"]["label"] == f"x86-local (loopback-board, {sshd['host']})"
    assert report["emulated"] == NOTE and report["environment"]["emulated"] == NOTE
    assert report["suggested_order"] is None
    md = (out_dir / "bench.md").read_text()
    assert f"> **EMULATED: {NOTE}." in md and "p50 / p90 / p99 ms (emulated)" in md
    assert "| peak RSS MiB (baseline) |" in md  # memory stays unlabelled


def test_an_inventory_name_fills_what_the_flags_do_not_give(tmp_path, private_inventory):
    key = tmp_path / "id"
    key.write_text("k")
    ssh = {"identity": str(key), "known_hosts": str(tmp_path / "kh"), "strict_host_key_checking": "yes"}
    inventory.update("b1", "root@127.0.0.1", 2201, profile="rpi5", root="/opt/edgewise", ssh=ssh)
    got = inventory.resolve("b1", None)
    assert (got.host, got.port, got.profile, got.name, got.device_id) == (
        "root@127.0.0.1",
        2201,
        "rpi5",
        "b1",
        "b1",
    )
    assert got.ssh == ssh and got.root == "/opt/edgewise"
    got = inventory.resolve("b1", 2299, profile="rpi4")  # explicit flags win
    assert (got.port, got.profile) == (2299, "rpi4")
    got = inventory.resolve("root@127.0.0.1", 2201)  # the recorded address finds its record too
    assert got.name == "b1" and got.ssh == ssh and got.profile == "rpi5" and got.device_id is None
    got = inventory.resolve("pi@10.0.0.7", None)  # not recorded: as given, no options
    assert (got.host, got.name, got.ssh, got.profile) == ("pi@10.0.0.7", None, {}, None)


def test_a_host_without_a_profile_is_one_clear_error(bench_bundle, tmp_path, private_inventory):
    inventory.update("bare", "pi@10.0.0.7", 22)
    with pytest.raises(ConfigError, match="--host bare needs --device NAME"):
        bench(bench_bundle, tmp_path, "--host", "bare")
    with pytest.raises(ConfigError, match=r"needs --device NAME.*not a device in the inventory"):
        bench(bench_bundle, tmp_path, "--host", "pi@10.0.0.8")
    with pytest.raises(ConfigError, match="--port, --identity and --known-hosts need --host"):
        bench(bench_bundle, tmp_path, "--port", "2222")
