"""The registry's storage: what a push accepts and refuses, immutable versions, promotions."""

from __future__ import annotations

import json
import threading

import pytest

from edgewise.bundle import sha256_file
from edgewise.cloud.registry.storage import Registry, RegistryError
from edgewise.errors import ConfigError
from tests.edge.security.conftest import archive, signed_copy


@pytest.fixture
def registry(tmp_path, keys):
    return Registry(tmp_path / "registry", public_key=keys["fleet"]["pub"])


def stored_files(registry: Registry) -> list[str]:
    base = registry.root / "bundles"
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.is_dir() else []


def test_a_signed_bundle_is_stored_once_and_comes_back_byte_for_byte(registry, ser_bundle, keys, tmp_path):
    folder = signed_copy(ser_bundle, tmp_path / "src", "1.1.0", keys["fleet"]["key"])
    record, new = registry.push(folder, by="ops")
    assert new and (record.name, record.version, record.task) == ("ser-tiny", "1.1.0", "ser")
    assert record.key_id == keys["fleet"]["id"] and record.pushed_by == "ops"
    stored = registry.archive("ser-tiny", "1.1.0")
    assert sha256_file(stored) == record.sha256 and stored.stat().st_size == record.size
    # the archive of the same folder, pushed again: nothing new
    again, new = registry.push(archive(folder, tmp_path / "www"))
    assert not new and again == record
    assert [r.version for r in registry.versions("ser-tiny")] == ["1.1.0"]


@pytest.mark.parametrize("signer", [None, "other"], ids=["unsigned", "another-key"])
def test_a_bundle_the_fleet_key_did_not_sign_is_refused_and_nothing_is_stored(
    registry,
    ser_bundle,
    keys,
    tmp_path,
    signer,
):
    key = keys[signer]["key"] if signer else None
    folder = signed_copy(ser_bundle, tmp_path / "src", "1.1.0", key)
    with pytest.raises(Exception, match="not signed" if signer is None else "does not verify"):
        registry.push(folder)
    assert stored_files(registry) == []


def test_a_tampered_artifact_is_refused(registry, ser_bundle, keys, tmp_path):
    folder = signed_copy(ser_bundle, tmp_path / "src", "1.1.0", keys["fleet"]["key"])
    artifact = next(p for p in folder.rglob("*.onnx"))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(Exception, match="sha256"):
        registry.push(folder)
    assert stored_files(registry) == []


def test_a_stored_version_never_changes(registry, ser_bundle, keys, tmp_path):
    first = signed_copy(ser_bundle, tmp_path / "a", "1.1.0", keys["fleet"]["key"])
    other = signed_copy(
        ser_bundle, tmp_path / "b", "1.1.0", keys["fleet"]["key"], labels=["a", "b", "c", "d"]
    )
    record, _ = registry.push(first)
    with pytest.raises(RegistryError, match="immutable"):
        registry.push(other)
    assert sha256_file(registry.archive("ser-tiny", "1.1.0")) == record.sha256


def test_concurrent_pushes_of_one_version_store_one_copy(registry, ser_bundle, keys, tmp_path):
    folders = [signed_copy(ser_bundle, tmp_path / f"s{i}", "1.2.0", keys["fleet"]["key"]) for i in range(3)]
    results: list = []
    threads = [threading.Thread(target=lambda f=f: results.append(registry.push(f))) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(new for _, new in results) == [False, False, True]
    assert len({r.sha256 for r, _ in results}) == 1


def test_promotions_need_a_stored_version_and_keep_their_history(registry, ser_bundle, keys, tmp_path):
    for version in ("1.1.0", "1.10.0", "1.2.0"):
        registry.push(signed_copy(ser_bundle, tmp_path / version, version, keys["fleet"]["key"]))
    assert [r.version for r in registry.versions()] == ["1.1.0", "1.2.0", "1.10.0"]  # semantic order
    with pytest.raises(
        RegistryError, match=r"ser-tiny 9.9.9: not in the registry \(it has 1.1.0, 1.2.0, 1.10.0\)"
    ):
        registry.promote("lab", "ser-tiny", "9.9.9")
    with pytest.raises(RegistryError, match="no versions of nope"):
        registry.promote("lab", "nope", "1.0.0")
    registry.promote("lab", "ser-tiny", "1.1.0", by="ops")
    entry = registry.promote("lab", "ser-tiny", "1.2.0", by="ops")
    assert registry.promoted("lab") == entry and [e["version"] for e in registry.promotions("lab")] == [
        "1.1.0",
        "1.2.0",
    ]
    assert entry["sha256"] == registry.record("ser-tiny", "1.2.0").sha256
    assert registry.fleets() == ["lab"] and registry.promoted("other") is None
    assert json.loads((registry.root / "promotions" / "lab.json").read_text())["history"][-1] == entry


@pytest.mark.parametrize("fleet", ["", "a/b", "+", "$SYS", "x" * 129])
def test_a_fleet_name_that_is_not_one_topic_level_is_refused(registry, fleet):
    with pytest.raises(ConfigError, match="fleet"):
        registry.promotions(fleet)


@pytest.mark.parametrize(
    "name,version", [("../x", "1.0.0"), ("ser-tiny", "1.0"), ("ser-tiny", "../../1.0.0")]
)
def test_names_and_versions_cannot_leave_the_registry(registry, name, version):
    with pytest.raises(RegistryError, match="not a bundle name and semantic version"):
        registry.archive(name, version)
    if name != "ser-tiny":
        with pytest.raises(RegistryError, match="not a bundle name"):
            registry.versions(name)


def test_an_unusable_key_path_fails_when_the_registry_opens(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        Registry(tmp_path / "r", public_key=tmp_path / "missing.pub")
