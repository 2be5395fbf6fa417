"""``edge-deploy wheelhouse``: the device's wheels, downloaded here, for an offline bootstrap.

No test reaches a package index: the download test runs the real ``pip download`` with
``--no-index --find-links`` over a folder of small real wheels (built here) and the pip wheel that
CPython's ensurepip bundles. The board tests download the real aarch64 set.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from edgewise.devices import list_profiles, load_profile
from edgewise.edge.deploy.wheelhouse import Wheel, Wheelhouse, platform_tags

from .conftest import run_cli


def make_wheel(folder: Path, name: str, version: str, tag: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal real wheel (metadata only) that pip reads, resolves and downloads."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{dist}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
        + ("Provides-Extra: edge\n" if any("extra ==" in r for r in requires) else ""),
        f"{dist}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},{len(text)}\n"
        for path, text in files.items()
    )
    files[f"{dist}/RECORD"] = record + f"{dist}/RECORD,,\n"
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            zf.writestr(arc, text)
    return path


def bundled_pip() -> Path:
    import ensurepip

    found = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    if not found:
        pytest.skip("this Python's ensurepip has no bundled pip wheel (a distribution that strips it)")
    return found[-1]


@pytest.fixture
def own_pip_config(monkeypatch):
    """pip sees only what a test gives it: no pip.conf, no PIP_* settings of this machine."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")


def test_pip_download_for_the_device_takes_its_wheels_not_this_machines(capsys, tmp_path, own_pip_config):
    """Real pip, offline: the local edgewise wheel's [edge] dependency exists for aarch64 and for
    x86_64; the rpi5 wheelhouse gets the aarch64 one, pip, and the edgewise wheel itself. An older
    set in --out is replaced."""
    index = tmp_path / "index"
    index.mkdir()
    (index / bundled_pip().name).write_bytes(bundled_pip().read_bytes())
    make_wheel(index, "fastmath", "1.0", "cp311-cp311-manylinux_2_17_aarch64")
    make_wheel(index, "fastmath", "1.0", "cp311-cp311-manylinux_2_17_x86_64")
    make_wheel(index, "fastmath", "2.0", "cp311-cp311-manylinux_2_39_aarch64")  # too new a glibc for bookworm
    dist = tmp_path / "dist"
    dist.mkdir()
    wheel = make_wheel(dist, "edgewise", "0.1.0", "py3-none-any", ("fastmath; extra == 'edge'",))
    out = tmp_path / "wh"
    out.mkdir()
    (out / "edgewise-0.0.9-py3-none-any.whl").write_bytes(b"an older set")
    rc, stdout, err = run_cli(
        capsys, "wheelhouse", "--device", "rpi5", "--out", out, "--edgewise-spec", f"{wheel}[edge]",
        "--no-index", "--find-links", index,
    )  # fmt: skip
    assert rc == 0, stdout + err
    assert sorted(p.name for p in out.iterdir()) == [
        "edgewise-0.1.0-py3-none-any.whl",
        "fastmath-1.0-cp311-cp311-manylinux_2_17_aarch64.whl",
        bundled_pip().name,
    ]
    house = Wheelhouse.open(out)
    assert house.misfits("3.11.2", "aarch64", "glibc 2.36") == []
    assert f"{out.resolve()}: 3 wheels, {house.size / 1e6:.0f} MB, for CPython 3.11 on aarch64" in stdout
    assert (
        f"next: edge-deploy --device rpi5 --host USER@ADDR --bootstrap --wheelhouse {out.resolve()}" in stdout
    )

    rc, _, err = run_cli(
        capsys, "wheelhouse", "--device", "rpi5", "--out", tmp_path / "wh2", "--python", "3.12",
        "--edgewise-spec", f"{wheel}[edge]", "--no-index", "--find-links", index,
    )  # fmt: skip
    assert rc == 2 and err.startswith("edge-deploy: error: pip download for rpi5 failed: ")
    assert "no wheel of it for CPython 3.12 on aarch64" in err and not (tmp_path / "wh2").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "toaster"], "unknown device 'toaster'; known devices: "),
        (
            ["--device", "jetson-nano"],
            "profile jetson-nano names no python_version (JetPack 4 ships Python 3.6",
        ),
        (["--device", "jetson-nano", "--python", "3.6"], "--python 3.6: edgewise needs Python >= 3.10"),
        (
            ["--device", "rpi5", "--python", "eleven"],
            "--python 'eleven': expected a CPython version like 3.11",
        ),
        (
            ["--device", "rpi5", "--edgewise-spec", "dist/nope.whl[edge]"],
            "--edgewise-spec dist/nope.whl: no such file",
        ),
        (["--device", "rpi5", "--no-index"], "--no-index needs at least one --find-links DIR"),
    ],
)
def test_argument_errors_are_one_line_before_pip_runs(capsys, tmp_path, args, message):
    rc, _, err = run_cli(capsys, "wheelhouse", "--out", tmp_path / "wh", *args)
    assert rc == 2 and err.startswith(f"edge-deploy: error: {message}"), err
    assert "Traceback" not in err and not (tmp_path / "wh").exists()


def test_every_profile_knows_its_glibc_or_takes_manylinux_2_28():
    assert platform_tags(load_profile("rpi5"))[:2] == ["manylinux_2_36_aarch64", "manylinux_2_35_aarch64"]
    assert platform_tags(load_profile("rpi5"))[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert platform_tags(load_profile("x86-local"))[0] == "manylinux_2_28_x86_64"
    assert {load_profile(n).python_version for n in list_profiles()} == {None, "3.10", "3.11"}
    assert load_profile("rpi4").python_version == "3.11" and load_profile("jetson").python_version == "3.10"


@pytest.mark.parametrize(
    ("filename", "python", "arch", "glibc", "fits"),
    [
        (
            "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
            (3, 11),
            "aarch64",
            (2, 36),
            True,
        ),
        (
            "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
            (3, 10),
            "aarch64",
            (2, 36),
            False,
        ),
        ("numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.whl", (3, 11), "aarch64", (2, 26), False),
        ("numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.whl", (3, 11), "x86_64", (2, 36), False),
        ("protobuf-7.36.2-cp310-abi3-manylinux2014_aarch64.whl", (3, 12), "aarch64", (2, 17), True),
        ("protobuf-7.36.2-cp310-abi3-manylinux2014_aarch64.whl", (3, 9), "aarch64", (2, 36), False),
        ("soundfile-0.14.0-py2.py3-none-manylinux_2_28_aarch64.whl", (3, 11), "aarch64", (2, 36), True),
        ("onnxruntime_gpu-1.23.0-cp310-cp310-linux_aarch64.whl", (3, 10), "aarch64", None, True),
        ("six-1.17.0-py2.py3-none-any.whl", (3, 13), "x86_64", None, True),
        ("numpy-2.4.6-cp311-cp311-musllinux_1_2_aarch64.whl", (3, 11), "aarch64", (2, 36), False),
    ],
)
def test_a_wheel_fits_a_device_by_its_tags(filename, python, arch, glibc, fits):
    assert Wheel.parse(filename).installs_on(python, arch, glibc) is fits


def test_no_network_is_said_so(capsys, tmp_path, monkeypatch, own_pip_config):
    """Real pip against an index on a loopback port where nothing listens (one retry): the error
    names the missing network and what to do, not pip's traceback of retries."""
    from edgewise.devtools.mosquitto import free_port

    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{free_port()}/simple")
    monkeypatch.setenv("PIP_RETRIES", "1")  # pip says why only when it retries
    rc, _, err = run_cli(capsys, "wheelhouse", "--device", "rpi5", "--out", tmp_path / "wh")
    assert rc == 2 and err.startswith(
        "edge-deploy: error: pip download could not reach the package index (no network?): "
    ), err
    assert err.rstrip().endswith(
        "make the wheelhouse on a machine with internet access and copy the folder here"
    )
    assert not (tmp_path / "wh").exists()
