"""What an install copies: exactly the files the signed manifest names, re-verified with the key."""

from __future__ import annotations

import json

import pytest

from edgewise.bundle import SignatureError, sha256_file, sign_manifest
from edgewise.edge import install
from edgewise.edge.install import InstallError, install_bundle
from tests.edge.daemon.conftest import bundle_version

pytestmark = pytest.mark.slow


def installed_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def listed_files(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    return [a["path"] for m in manifest["models"].values() for a in m["artifacts"]]


def referenced_files(folder):
    """The reference sets the manifest names (``extra.reference.path``)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    artifacts = [a for m in manifest["models"].values() for a in m["artifacts"]]
    return {a["extra"]["reference"]["path"] for a in artifacts if "reference" in a.get("extra", {})}


def test_the_manifest_signature_and_the_listed_files_are_installed(ser_bundle, keys, tmp_path):
    src = bundle_version(ser_bundle, tmp_path, "1.1.0")
    ref = src / "models" / "ser.trt-reference.npz"
    ref.write_bytes(b"the reference set")
    manifest = json.loads((src / "manifest.json").read_text())
    art = next(iter(manifest["models"].values()))["artifacts"][0]
    art["extra"] = {
        **art.get("extra", {}),
        "reference": {"path": "models/ser.trt-reference.npz", "sha256": sha256_file(ref), "size_bytes": 17},
    }
    (src / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_manifest(src, keys["fleet"]["key"])
    dest = install_bundle(tmp_path / "root", src, public_key=keys["fleet"]["pub"])
    # plus every reference set the manifest names, and parity.json: the device's own check
    expected = ["manifest.json", "manifest.sig", *listed_files(src), *referenced_files(src), "parity.json"]
    assert installed_files(dest) == sorted(expected)


def test_a_file_the_manifest_does_not_list_is_refused_by_name(ser_bundle, tmp_path):
    root = tmp_path / "root"
    src = bundle_version(ser_bundle, tmp_path, "1.2.0")
    (src / "models" / "notes.txt").write_text("not in the manifest")
    with pytest.raises(
        InstallError, match=r"models/notes.txt is not listed in the bundle's manifest.json"
    ) as err:
        install_bundle(root, src)
    assert str(src / "models" / "notes.txt") in str(err.value)
    assert not list(root.glob("models/*/*")) and not list(root.glob("models/*/.*"))


@pytest.mark.parametrize("what", ["a file outside", "a folder outside", "a listed artifact"])
def test_a_symbolic_link_anywhere_in_the_bundle_is_refused(ser_bundle, tmp_path, what):
    root = tmp_path / "root"
    src = bundle_version(ser_bundle, tmp_path, "1.3.0")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "device.key").write_text("a device secret")
    if what == "a file outside":
        link, target = src / "models" / "leak", secrets / "device.key"
    elif what == "a folder outside":
        link, target = src / "extra", secrets
    else:  # the artifact itself becomes a link to an identical copy inside the bundle's own folder
        link = src / listed_files(src)[0]
        target = link.with_name("real")
        link.rename(target)
    link.symlink_to(target)
    rel = link.relative_to(src).as_posix()
    with pytest.raises(InstallError, match=rf"the bundle holds a symbolic link \({rel} -> "):
        install_bundle(root, src)
    assert not list(root.glob("models/*/*")) and not list(root.glob("models/*/.*"))


def test_the_copy_is_verified_with_the_key_before_it_gets_its_name(ser_bundle, keys, tmp_path, monkeypatch):
    """The source changes after its signature was checked and before it is copied (a race with
    whoever can write the bundle folder, made deterministic here by changing the manifest just
    before the copy): the copy's own signature check refuses it."""
    root = tmp_path / "root"
    src = bundle_version(ser_bundle, tmp_path, "1.4.0")
    sign_manifest(src, keys["fleet"]["key"])
    real_copy = install._copy_listed

    def swap_then_copy(source, dest, files):
        manifest = json.loads((source / "manifest.json").read_text())
        manifest["labels"] = list(reversed(manifest["labels"]))  # unsigned: same artifacts, other meaning
        (source / "manifest.json").write_text(json.dumps(manifest, indent=2))
        real_copy(source, dest, files)

    monkeypatch.setattr(install, "_copy_listed", swap_then_copy)
    with pytest.raises(SignatureError):
        install_bundle(root, src, public_key=keys["fleet"]["pub"])
    folder = root / "models" / "ser-tiny"
    assert not (folder / "1.4.0").exists() and not list(folder.glob(".*"))
    assert "ser-tiny/1.4.0" not in install.status(root)["installed"]
