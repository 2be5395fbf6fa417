"""Versions only go up through a deploy, and a device keeps the newest N installs and their engines."""

from __future__ import annotations

import json

import pytest

from edgewise.edge.deploy.cli import main
from edgewise.edge.install import (
    DowngradeError,
    VersionError,
    activate,
    check_version,
    compare_versions,
    install_bundle,
    mark_good,
    prune,
    recover,
    rollback,
    status,
)
from tests.edge.daemon.conftest import bundle_version


def test_versions_compare_by_semver_precedence():
    order = ["0.9.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-rc.1", "1.0.0", "1.2.0", "1.10.0"]
    for older, newer in zip(order, order[1:]):
        assert compare_versions(older, newer) == -1 and compare_versions(newer, older) == 1
    assert compare_versions("1.0.0+build.5", "1.0.0") == 0


def installs(ser_bundle, tmp_path, root, versions):
    return {v: install_bundle(root, bundle_version(ser_bundle, tmp_path / "src", v)) for v in versions}


def engine(root, name, onnx_sha256):
    folder = root / "engines"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.plan").write_bytes(b"engine")
    (folder / f"{name}.json").write_text(json.dumps({"onnx_sha256": onnx_sha256}))


@pytest.mark.slow
def test_a_deploy_never_goes_down_unless_asked(ser_bundle, tmp_path):
    root = tmp_path / "root"
    made = installs(ser_bundle, tmp_path, root, ["1.1.0", "1.0.0"])
    activate(root, made["1.1.0"])
    assert check_version(root, "ser-tiny", "1.2.0") == "upgrade"
    assert check_version(root, "ser-tiny", "1.1.0") == "same"
    assert check_version(root, "another-model", "0.1.0") == "new"
    with pytest.raises(
        DowngradeError, match=r"ser-tiny 1.0.0 is older than ser-tiny 1.1.0, installed here before"
    ):
        check_version(root, "ser-tiny", "1.0.0")
    assert check_version(root, "ser-tiny", "1.0.0", allow_downgrade=True) == "downgrade"


@pytest.mark.slow
def test_the_floor_is_the_highest_version_ever_installed_whatever_runs_now(ser_bundle, tmp_path):
    """Another model in between, prune and rollback never open a way down; an old state.json without
    the high-water mark derives it from its installed versions."""
    root = tmp_path / "root"
    for name, version in [("ser-tiny", "1.0.0"), ("ser-tiny", "2.0.0"), ("kws", "0.1.0"), ("kws", "0.2.0")]:
        src = bundle_version(ser_bundle, tmp_path / f"{name}-{version}", version, name=name)
        activate(root, install_bundle(root, src))
    assert status(root)["current"] == "kws/0.2.0"
    older = r"ser-tiny 1.0.0 is older than ser-tiny 2.0.0, installed here before"
    with pytest.raises(DowngradeError, match=older):
        check_version(root, "ser-tiny", "1.0.0")  # another name runs: still refused
    assert check_version(root, "ser-tiny", "2.0.0") == "installed"  # the highest, not running
    assert check_version(root, "ser-tiny", "2.1.0") == "upgrade"
    assert check_version(root, "ser-tiny", "1.0.0", allow_downgrade=True) == "downgrade"

    state_file = root / "state.json"
    state = json.loads(state_file.read_text())
    assert state["highest"] == {"ser-tiny": "2.0.0", "kws": "0.2.0"}
    del state["highest"]  # as written before the field existed
    state_file.write_text(json.dumps(state))
    with pytest.raises(DowngradeError, match=older):
        check_version(root, "ser-tiny", "1.0.0")

    assert prune(root, keep=1) == ["ser-tiny/1.0.0", "ser-tiny/2.0.0"]  # every ser-tiny install gone
    with pytest.raises(DowngradeError, match=older):
        check_version(root, "ser-tiny", "1.0.0")
    assert rollback(root) == "kws/0.1.0"  # the explicit way back still goes back
    assert check_version(root, "kws", "0.1.0") == "same"  # what runs now
    with pytest.raises(DowngradeError, match=r"kws 0.1.5 is older than kws 0.2.0, installed here before"):
        check_version(root, "kws", "0.1.5")
    assert status(root)["highest"] == {"ser-tiny": "2.0.0", "kws": "0.2.0"}


@pytest.mark.slow
def test_build_metadata_is_no_new_version(ser_bundle, tmp_path):
    root = tmp_path / "root"
    activate(root, install_bundle(root, bundle_version(ser_bundle, tmp_path, "2.0.0")))
    assert check_version(root, "ser-tiny", "2.0.0") == "same"
    for allow in (False, True):
        with pytest.raises(
            VersionError,
            match=r"ser-tiny 2.0.0\+rebuild has the same precedence as ser-tiny 2.0.0, installed here "
            r"before: build metadata \(after '\+'\) does not order versions",
        ):
            check_version(root, "ser-tiny", "2.0.0+rebuild", allow_downgrade=allow)


@pytest.mark.slow
def test_edge_deploy_refuses_an_older_version_and_allow_downgrade_overrides(ser_bundle, tmp_path, capsys):
    root = tmp_path / "root"
    newer = bundle_version(ser_bundle, tmp_path, "1.5.0")
    args = ["--device", "local", "--root", str(root)]
    assert main([*args, str(newer)]) == 0
    capsys.readouterr()
    assert main([*args, str(ser_bundle)]) == 2
    err = capsys.readouterr().err
    assert (
        "ser-tiny 1.0.0 is older than ser-tiny 1.5.0, installed here before" in err
        and "--allow-downgrade" in err
    )
    assert status(root)["current"] == "ser-tiny/1.5.0"
    assert not (root / "models" / "ser-tiny" / "1.0.0").exists()
    assert main([*args, "--allow-downgrade", str(ser_bundle)]) == 0
    assert status(root)["current"] == "ser-tiny/1.0.0"


@pytest.mark.slow
def test_prune_keeps_the_newest_and_the_protected_and_their_engines(ser_bundle, tmp_path):
    root = tmp_path / "root"
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"]
    made = installs(ser_bundle, tmp_path, root, versions)
    activate(root, made["1.0.0"])
    mark_good(root, "ser-tiny/1.0.0")  # the last good one is old: kept anyway
    activate(root, made["1.1.0"])  # 1.0.0 is now previous too
    activate(root, made["1.4.0"])  # current; 1.1.0 previous
    manifest = json.loads((made["1.2.0"] / "manifest.json").read_text())
    entry = next(iter(manifest["models"].values()))
    shared_sha = entry["artifacts"][0]["sha256"]  # every copy has the same artifacts
    engine(root, "shared", shared_sha)
    engine(root, "only-old", "ab" * 32)
    entry["artifacts"][0]["sha256"] = "ab" * 32  # as if 1.2.0 alone had been built from that graph
    (made["1.2.0"] / "manifest.json").write_text(json.dumps(manifest))

    removed = prune(root, keep=2)
    assert removed == ["ser-tiny/1.2.0", "only-old.plan", "only-old.json"]
    kept = sorted(p.name for p in (root / "models" / "ser-tiny").iterdir())
    assert kept == ["1.0.0", "1.1.0", "1.3.0", "1.4.0"]  # 1.3/1.4 newest, 1.1 previous, 1.0 last good
    assert status(root)["installed"] == [
        "ser-tiny/1.0.0",
        "ser-tiny/1.1.0",
        "ser-tiny/1.3.0",
        "ser-tiny/1.4.0",
    ]
    assert sorted(p.name for p in (root / "engines").iterdir()) == ["shared.json", "shared.plan"]
    assert prune(root, keep=2) == []  # nothing more to do
    assert recover(root) == []  # and nothing half-done left behind


@pytest.mark.slow
def test_edge_deploy_keep_prunes_after_a_good_deploy(ser_bundle, tmp_path, capsys):
    root = tmp_path / "root"
    args = ["--device", "local", "--root", str(root), "--keep", "1"]
    for v in ("1.1.0", "1.2.0", "1.3.0"):
        assert main([*args, str(bundle_version(ser_bundle, tmp_path, v))]) == 0
    out = capsys.readouterr().out
    assert "pruned (keeping the newest 1): ser-tiny/1.1.0" in out
    # current (1.3.0) and previous = last good (1.2.0) are never pruned
    assert sorted(p.name for p in (root / "models" / "ser-tiny").iterdir()) == ["1.2.0", "1.3.0"]


@pytest.mark.slow
def test_edge_deploy_refuses_an_older_version_after_another_model_ran(ser_bundle, tmp_path, capsys):
    root = tmp_path / "root"
    args = ["--device", "local", "--root", str(root)]
    assert main([*args, str(bundle_version(ser_bundle, tmp_path / "a", "2.0.0"))]) == 0
    assert main([*args, str(bundle_version(ser_bundle, tmp_path / "k", "0.1.0", name="kws"))]) == 0
    capsys.readouterr()
    older = bundle_version(ser_bundle, tmp_path / "o", "1.5.0")
    assert main([*args, str(older)]) == 2
    err = capsys.readouterr().err
    assert "ser-tiny 1.5.0 is older than ser-tiny 2.0.0, installed here before" in err
    assert status(root)["current"] == "kws/0.1.0"
    assert not (root / "models" / "ser-tiny" / "1.5.0").exists()
    rebuilt = bundle_version(ser_bundle, tmp_path / "r", "2.0.0+rebuild")
    assert main([*args, "--allow-downgrade", str(rebuilt)]) == 2
    assert "build metadata" in capsys.readouterr().err
    assert main([*args, "--allow-downgrade", str(older)]) == 0
    assert status(root)["current"] == "ser-tiny/1.5.0"
    assert main(["rollback", *args]) == 0  # the explicit way back
    assert status(root)["current"] == "kws/0.1.0"


def test_edge_deploy_verifies_with_the_key_the_device_trusts_not_the_one_it_is_given(
    ser_bundle, keys, tmp_path, capsys
):
    """Seen on an emulated board: edge-deploy --key OTHER installed a bundle signed with OTHER on a
    device whose daemon trusts the fleet key, and the daemon then refused to load it."""
    from tests.edge.security.conftest import signed_copy

    root = tmp_path / "root"
    root.mkdir()
    (root / "daemon.yaml").write_text(f"public_key: {keys['fleet']['pub']}\n")
    args = ["--device", "local", "--root", str(root), "--any-arch"]
    by_other = signed_copy(ser_bundle, tmp_path / "o", "1.0.0", keys["other"]["key"])
    assert main([*args, "--key", str(keys["other"]["pub"]), str(by_other)]) == 2
    assert "this device trusts only key" in capsys.readouterr().err
    unsigned = signed_copy(ser_bundle, tmp_path / "u", "1.0.0", None)
    assert main([*args, str(unsigned)]) == 2  # no --key: the device's key still applies
    assert "manifest.sig" in capsys.readouterr().err
    assert not (root / "models").exists() or not any((root / "models").rglob("manifest.json"))
    by_fleet = signed_copy(ser_bundle, tmp_path / "f", "1.0.0", keys["fleet"]["key"])
    assert main([*args, str(by_fleet)]) == 0
