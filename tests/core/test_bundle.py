"""The bundle contract: what export writes is exactly what the edge reads, and nothing else gets in."""

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from datetime import datetime, timezone

import numpy as np
import pytest

from edgewise.bundle import (
    BundleError,
    BundleWriter,
    IntegrityError,
    SignatureError,
    generate_keypair,
    load_bundle,
    safe_extract,
    sha256_file,
    verify_signature,
)
from edgewise.errors import EdgewiseError
from edgewise.features import LogMelConfig

LABELS = ["neutral", "happy", "sad", "angry"]
FEAT = LogMelConfig(n_mels=8, f_max=4000.0).with_stats(np.arange(8) * 0.5, np.ones(8) + 0.25)
ONNX = b"fake onnx graph " * 64
ONNX_INT8 = b"fake int8 onnx " * 32
TFLITE = b"fake tflite flatbuffer " * 16
CREATED = datetime(2026, 5, 9, 7, 35, 25, tzinfo=timezone.utc)


def tensor(name, shape, dtype="float32"):
    return {"name": name, "shape": shape, "dtype": dtype}


def write_ser(out, *, sign_key=None, archive=True, onnx=ONNX, **kwargs):
    with BundleWriter(
        out,
        name="ser-tiny",
        version="1.0.0",
        task="ser",
        labels=LABELS,
        preprocessing={"log_mel": FEAT, "window_seconds": 3.0},
        provenance={"run": "runs/tiny", "corpus_sha256": "ab" * 32, "note": "window [1,300]"},
        created=CREATED,
        **kwargs,
    ) as w:
        w.add_model(
            "classifier",
            inputs=[tensor("features", ["batch", "time", 8])],
            outputs=[tensor("logits", ["batch", 4])],
        )
        entry = w.add_artifact(
            "classifier", onnx, "models/ser.onnx", format="onnx", precision="fp32", runtime="onnxruntime"
        )
        entry.parity = {"max_abs_diff": 0.0, "tolerance": 1e-5, "passed": True}  # recorded after the gate
        w.add_artifact(
            "classifier",
            ONNX_INT8,
            "models/ser.int8.onnx",
            format="onnx",
            precision="int8",
            runtime="onnxruntime",
            parity={"max_abs_diff": np.float32(0.03), "ua_drop": 0.004, "passed": True},
        )
        w.add_artifact(
            "classifier",
            TFLITE,
            "models/ser.fp32.tflite",
            format="tflite",
            precision="fp32",
            runtime="litert",
            fixed_shape={"features": [1, 300, 8]},
        )
        return w.finish(sign_key=sign_key, archive=archive)


@pytest.fixture
def bundle_dir(tmp_path):
    return write_ser(tmp_path / "out")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    key_id = generate_keypair(d / "signer.pem", d / "signer.pub")
    generate_keypair(d / "other.pem", d / "other.pub")
    return d, key_id


def edit_manifest(bundle_dir, change):
    path = bundle_dir / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


# --- round trip ---------------------------------------------------------------------------------


def test_round_trip_through_the_folder(bundle_dir):
    assert bundle_dir.name == "ser-tiny-1.0.0"
    assert leftovers(bundle_dir.parent) == ["ser-tiny-1.0.0", "ser-tiny-1.0.0.tar.gz"]
    b = load_bundle(bundle_dir)
    m = b.manifest
    assert (m.schema_version, m.name, m.version, m.task, m.labels) == (1, "ser-tiny", "1.0.0", "ser", LABELS)
    assert m.created == CREATED and m.preprocessing["window_seconds"] == 3.0
    assert m.log_mel() == FEAT
    assert m.provenance["run"] == "runs/tiny" and "edgewise" in m.provenance
    assert m.provenance["note"] == "window [1,300]"  # text is never reformatted
    assert '"shape": ["batch", "time", 8]' in (bundle_dir / "manifest.json").read_text()
    assert [a.path for a in b.artifacts()] == [
        "models/ser.onnx",
        "models/ser.int8.onnx",
        "models/ser.fp32.tflite",
    ]
    assert [a.path for a in b.artifacts(format="onnx", precision="int8")] == ["models/ser.int8.onnx"]
    onnx = b.artifacts(role="classifier", format="onnx", precision="fp32")[0]
    assert b.artifact_path(onnx).read_bytes() == ONNX
    assert onnx.size_bytes == len(ONNX) and onnx.sha256 == hashlib.sha256(ONNX).hexdigest()
    assert onnx.parity == {"max_abs_diff": 0.0, "tolerance": 1e-5, "passed": True}
    assert b.artifacts(precision="int8")[0].parity["max_abs_diff"] == pytest.approx(0.03)
    assert b.artifacts(format="tflite")[0].fixed_shape == {"features": [1, 300, 8]}
    assert b.model("classifier").inputs[0].shape == ["batch", "time", 8]
    assert not b.signature_verified


def test_round_trip_through_the_archive_cleans_up_its_extraction(bundle_dir, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with tarfile.open(bundle_dir.with_name("ser-tiny-1.0.0.tar.gz")) as tar:
        assert {n.split("/")[0] for n in tar.getnames()} == {"ser-tiny-1.0.0"}
        assert all(m.uid == 0 and not m.issym() for m in tar.getmembers())
    with load_bundle(bundle_dir.with_name("ser-tiny-1.0.0.tar.gz"), tmp_dir=scratch) as b:
        assert b.root.name == "ser-tiny-1.0.0" and b.root.is_relative_to(scratch)
        assert b.manifest == load_bundle(bundle_dir).manifest
        assert b.artifact_path(b.artifacts(format="tflite")[0]).read_bytes() == TFLITE
    assert leftovers(scratch) == []


def test_the_archive_is_reproducible(tmp_path):
    first = write_ser(tmp_path / "a").with_name("ser-tiny-1.0.0.tar.gz").read_bytes()
    second = write_ser(tmp_path / "b").with_name("ser-tiny-1.0.0.tar.gz").read_bytes()
    assert first == second


def test_a_multi_model_pipeline_round_trips(tmp_path):
    with BundleWriter(tmp_path, name="tts-en", version="0.2.0-rc.1", task="tts") as w:
        w.add_model(
            "acoustic",
            inputs=[tensor("phonemes", ["batch", "text"], "int64")],
            outputs=[tensor("mel", ["batch", "frames", 80])],
        )
        w.add_model(
            "vocoder",
            inputs=[tensor("mel", ["batch", "frames", 80])],
            outputs=[tensor("audio", ["batch", "samples"])],
            extra={"hop_length": 256},
        )
        w.add_artifact(
            "acoustic",
            b"a" * 10,
            "models/acoustic.onnx",
            format="onnx",
            precision="fp16",
            runtime="onnxruntime",
        )
        w.add_artifact(
            "vocoder",
            b"v" * 10,
            "models/vocoder.plan",
            format="tensorrt-plan",
            precision="fp16",
            runtime="tensorrt",
        )
        root = w.finish(archive=False)
    b = load_bundle(root)
    assert list(b.manifest.models) == ["acoustic", "vocoder"] and b.manifest.labels is None
    assert [a.path for a in b.artifacts(role="vocoder")] == ["models/vocoder.plan"]
    assert b.model("vocoder").extra == {"hop_length": 256}
    with pytest.raises(BundleError, match=r"no model role 'decoder'; roles: \['acoustic', 'vocoder'\]"):
        b.artifacts(role="decoder")
    with pytest.raises(BundleError, match="preprocessing.log_mel' is missing"):
        b.manifest.log_mel()


# --- manifest validation -------------------------------------------------------------------------


def _art(data):
    return data["models"]["classifier"]["artifacts"][0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(version="1.0"), "field 'version': string should match pattern"),
        (lambda d: d.pop("name"), "field 'name' is required"),
        (lambda d: d.update(name="SER Tiny"), "field 'name'"),
        (lambda d: _art(d).update(quantized=True), "unknown field 'models.classifier.artifacts.0.quantized'"),
        (lambda d: _art(d).update(sha256="abc"), "field 'models.classifier.artifacts.0.sha256'"),
        (lambda d: _art(d).update(precision="int4"), "field 'models.classifier.artifacts.0.precision'"),
        (
            lambda d: _art(d).update(path="../evil.onnx"),
            "field 'models.classifier.artifacts.0.path'.*'\\.\\.'",
        ),
        (lambda d: _art(d).update(path="/etc/passwd"), "artifacts.0.path'.*must be relative"),
        (lambda d: _art(d).update(size_bytes="12"), "field 'models.classifier.artifacts.0.size_bytes'"),
        (
            lambda d: d["models"]["classifier"]["inputs"][0].update(shape=["batch", 2.5, 8]),
            "field 'models.classifier.inputs.0.shape'.*dimension 1",
        ),
        (
            lambda d: d["models"]["classifier"]["inputs"][0].update(dtype="float"),
            "field 'models.classifier.inputs.0.dtype'",
        ),
        (lambda d: _art(d).update(fixed_shape={"audio": [1, 16000]}), "names input 'audio'"),
        (lambda d: d["preprocessing"]["log_mel"].update(n_mels=40), "field 'preprocessing'.*log_mel.*'mean'"),
        (lambda d: d.update(labels=["sad", "sad"]), "field 'labels'.*duplicate label"),
        (lambda d: d["models"]["classifier"].update(artifacts=[]), "field 'models'.*has no artifacts"),
        (lambda d: d.update(created="2026-05-09T07:35:25"), "field 'created'"),
    ],
)
def test_manifest_errors_name_the_file_and_the_field(bundle_dir, change, expected):
    edit_manifest(bundle_dir, change)
    with pytest.raises(BundleError, match=expected) as info:
        load_bundle(bundle_dir)
    assert str(info.value).startswith(f"{bundle_dir.resolve() / 'manifest.json'}: ")


def test_an_unknown_schema_version_is_refused(bundle_dir):
    edit_manifest(bundle_dir, lambda d: d.update(schema_version=7))
    with pytest.raises(
        BundleError, match="manifest.json: schema_version 7 is not supported; this edgewise reads 1"
    ):
        load_bundle(bundle_dir)


def test_manifest_must_be_json_without_duplicate_keys(bundle_dir):
    path = bundle_dir / "manifest.json"
    path.write_text(path.read_text().replace('"task": "ser"', '"task": "ser", "task": "tts"'))
    with pytest.raises(BundleError, match=r"not valid JSON: duplicate key\(s\) \['task'\]"):
        load_bundle(bundle_dir)
    path.write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json: not valid JSON"):
        load_bundle(bundle_dir)


# --- integrity -----------------------------------------------------------------------------------


def test_a_flipped_byte_is_detected_naming_the_file_and_both_hashes(bundle_dir):
    path = bundle_dir / "models" / "ser.int8.onnx"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    expected, actual = hashlib.sha256(ONNX_INT8).hexdigest(), sha256_file(path)
    with pytest.raises(IntegrityError) as info:
        load_bundle(bundle_dir)
    msg = str(info.value)
    assert "models/ser.int8.onnx" in msg and "sha256 mismatch" in msg
    assert f"manifest says {expected}, file has {actual}" in msg
    # verify=False skips hashing (sizes and presence are still checked: they cost nothing)
    assert load_bundle(bundle_dir, verify=False).manifest.name == "ser-tiny"


def test_a_size_mismatch_is_detected(bundle_dir):
    with (bundle_dir / "models" / "ser.onnx").open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(
        IntegrityError, match=rf"size mismatch .*manifest says {len(ONNX)} bytes, file has {len(ONNX) + 1}"
    ):
        load_bundle(bundle_dir, verify=False)


def test_a_missing_artifact_is_detected(bundle_dir):
    (bundle_dir / "models" / "ser.fp32.tflite").unlink()
    with pytest.raises(
        IntegrityError,
        match="ser.fp32.tflite: artifact 'models/ser.fp32.tflite' of model 'classifier'.* is missing",
    ):
        load_bundle(bundle_dir)


def test_an_artifact_linking_outside_the_bundle_is_refused(bundle_dir, tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(ONNX)
    target = bundle_dir / "models" / "ser.onnx"
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(IntegrityError, match="leads outside the bundle"):
        load_bundle(bundle_dir)


def test_a_tampered_archive_is_detected(bundle_dir, tmp_path):
    tampered = tmp_path / "tampered.tar.gz"
    with (
        tarfile.open(bundle_dir.with_name("ser-tiny-1.0.0.tar.gz")) as src,
        tarfile.open(tampered, "w:gz") as dst,
    ):
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name.endswith("ser.onnx"):
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    with pytest.raises(IntegrityError, match="models/ser.onnx: sha256 mismatch"):
        load_bundle(tampered, tmp_dir=tmp_path / "scratch")


# --- signatures ----------------------------------------------------------------------------------


def test_a_signed_bundle_verifies_in_the_folder_and_the_archive(tmp_path, keys):
    d, key_id = keys
    root = write_ser(tmp_path, sign_key=d / "signer.pem")
    assert json.loads((root / "manifest.sig").read_text())["key_id"] == key_id
    assert verify_signature(root, d / "signer.pub") == key_id
    assert load_bundle(root, public_key=d / "signer.pub").signature_verified
    with load_bundle(root.with_name("ser-tiny-1.0.0.tar.gz"), public_key=d / "signer.pub") as b:
        assert b.signature_verified and (b.root / "manifest.sig").is_file()


def test_the_private_key_is_private(keys):
    d, _ = keys
    assert (d / "signer.pem").stat().st_mode & 0o777 == 0o600
    assert (d / "signer.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    with pytest.raises(SignatureError, match="already exists; refusing to replace a key"):
        generate_keypair(d / "signer.pem", d / "new.pub")


def test_an_unsigned_bundle_is_refused_when_a_key_is_given(bundle_dir, keys):
    d, _ = keys
    with pytest.raises(SignatureError, match="manifest.sig: missing: the bundle is not signed"):
        load_bundle(bundle_dir, public_key=d / "signer.pub")


def test_a_manifest_changed_after_signing_is_refused(tmp_path, keys):
    d, _ = keys
    root = write_ser(tmp_path, sign_key=d / "signer.pem")
    path = root / "manifest.json"
    path.write_text(path.read_text().replace('"angry"', '"angrx"'))
    assert load_bundle(root).manifest.labels[-1] == "angrx"  # still a valid bundle without a key
    with pytest.raises(
        SignatureError, match="signature does not match manifest.json .*changed after signing"
    ):
        load_bundle(root, public_key=d / "signer.pub")


def test_the_wrong_key_is_named(tmp_path, keys):
    d, key_id = keys
    root = write_ser(tmp_path, sign_key=d / "signer.pem")
    with pytest.raises(
        SignatureError, match=rf"signed with key {key_id}, but .*other.pub is key [0-9a-f]{{16}}"
    ):
        load_bundle(root, public_key=d / "other.pub")


def test_a_malformed_signature_or_key_is_refused(tmp_path, keys):
    d, _ = keys
    root = write_ser(tmp_path, sign_key=d / "signer.pem")
    (root / "manifest.sig").write_text('{"algorithm": "ed25519", "signature": "not base64!"}')
    with pytest.raises(SignatureError, match="manifest.sig: malformed"):
        load_bundle(root, public_key=d / "signer.pub")
    (tmp_path / "bad.pub").write_bytes(b"short")
    with pytest.raises(
        SignatureError, match="bad.pub: expected a PEM ed25519 public key or 32 raw bytes, got 5"
    ):
        verify_signature(root, tmp_path / "bad.pub")


# --- safe extraction -----------------------------------------------------------------------------


def _tar(path, *members):
    with tarfile.open(path, "w:gz") as tar:
        good = tarfile.TarInfo("bundle/manifest.json")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"{}"))
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _member(name, type_=tarfile.REGTYPE, linkname="", size=1):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = type_, linkname, size if type_ == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        (_member("/etc/cron.d/evil"), "member '/etc/cron.d/evil' has an absolute path"),
        (_member("bundle/../../evil"), r"member 'bundle/\.\./\.\./evil' contains '\.\.'"),
        (
            _member("bundle/ok", tarfile.SYMTYPE, "/etc/passwd"),
            "member 'bundle/ok' is a symbolic link to '/etc/passwd'",
        ),
        (
            _member("bundle/hard", tarfile.LNKTYPE, "bundle/manifest.json"),
            "member 'bundle/hard' is a hard link",
        ),
        (_member("bundle/tty", tarfile.CHRTYPE), "member 'bundle/tty' is a character device"),
        (_member("bundle/manifest.json"), "member 'bundle/manifest.json' appears twice"),
    ],
)
def test_unsafe_archives_are_refused_naming_the_member(tmp_path, member, expected):
    archive = _tar(tmp_path / "evil.tar.gz", member)
    with pytest.raises(BundleError, match=expected):
        safe_extract(archive, tmp_path / "dest")
    assert leftovers(tmp_path) == ["evil.tar.gz"]  # nothing extracted, no temp folder
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(BundleError, match=expected):
        load_bundle(archive, tmp_dir=scratch)
    assert leftovers(scratch) == []


def test_safe_extract_writes_a_new_folder_only(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", _member("bundle/models/a.onnx", size=3))
    dest = safe_extract(archive, tmp_path / "dest")
    assert (dest / "bundle" / "models" / "a.onnx").read_bytes() == b"xxx"
    with pytest.raises(BundleError, match="already exists"):
        safe_extract(archive, dest)
    with pytest.raises(BundleError, match="not a bundle archive: expected one top-level folder"):
        load_bundle(_tar(tmp_path / "two.tar.gz", _member("other/file")), tmp_dir=tmp_path)


def _header_only_tar(path, declared: int, count: int = 1, fmt=tarfile.GNU_FORMAT):
    """A plain tar whose headers declare ``declared`` bytes per member while holding none of them:
    a few kB on disk, what a decompression bomb looks like to the listing."""
    with path.open("wb") as fh:
        for i in range(count):
            info = tarfile.TarInfo(f"bundle/models/big{i}.onnx")
            info.size = declared
            fh.write(info.tobuf(format=fmt))
    return path


def test_an_archive_declaring_more_than_the_cap_is_refused_before_anything_is_written(tmp_path):
    archive = _header_only_tar(tmp_path / "bomb.tar", declared=3 * 1024**3)  # 3 GiB in a 1 kB file
    assert archive.stat().st_size < 4096
    with pytest.raises(
        BundleError, match=r"unpacks to more than 2147483648 bytes .*big0\.onnx' declares 3221225472"
    ):
        safe_extract(archive, tmp_path / "dest")
    assert leftovers(tmp_path) == ["bomb.tar"]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(BundleError, match="unpacks to more than"):
        load_bundle(archive, tmp_dir=scratch)
    assert leftovers(scratch) == []


def test_the_unpacked_size_and_member_caps_are_the_caller_s(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", _member("bundle/models/a.onnx", size=3000))
    with pytest.raises(BundleError, match="unpacks to more than 2000 bytes"):
        safe_extract(archive, tmp_path / "dest", max_bytes=2000)
    with pytest.raises(BundleError, match="unpacks to more than 2000 bytes"):
        load_bundle(archive, tmp_dir=tmp_path / "scratch", max_unpacked_bytes=2000)
    assert (
        safe_extract(archive, tmp_path / "dest", max_bytes=3002) / "bundle/models/a.onnx"
    ).stat().st_size == 3000
    many = _tar(tmp_path / "many.tar.gz", *(_member(f"bundle/f{i}") for i in range(20)))
    with pytest.raises(BundleError, match="more than 10 members"):
        safe_extract(many, tmp_path / "dest2", max_members=10)
    assert not (tmp_path / "dest2").exists()


def test_problems_lists_every_mismatching_artifact_at_once(bundle_dir):
    (bundle_dir / "models" / "ser.fp32.tflite").unlink()
    with (bundle_dir / "models" / "ser.onnx").open("ab") as fh:
        fh.write(b"x")
    int8 = bundle_dir / "models" / "ser.int8.onnx"
    int8.write_bytes(int8.read_bytes()[:-1] + b"!")
    bundle = load_bundle(bundle_dir, check_artifacts=False)  # opens whatever the artifacts are
    problems = bundle.problems()
    assert len(problems) == 3
    assert "ser.onnx: size mismatch" in problems[0] and "sha256 mismatch" in problems[1]
    assert (
        f"manifest says {hashlib.sha256(ONNX_INT8).hexdigest()}, file has {sha256_file(int8)}" in problems[1]
    )
    assert "ser.fp32.tflite" in problems[2] and "is missing" in problems[2]
    with pytest.raises(IntegrityError) as info:
        load_bundle(bundle_dir)
    assert str(info.value).splitlines() == problems


# --- writer --------------------------------------------------------------------------------------


def test_a_failure_inside_the_writer_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with (
        pytest.raises(RuntimeError, match="export crashed"),
        BundleWriter(out, name="ser-tiny", version="1.0.0", task="ser") as w,
    ):
        w.add_model("classifier", inputs=[tensor("x", [1])], outputs=[tensor("y", [1])])
        w.add_artifact(
            "classifier", ONNX, "models/ser.onnx", format="onnx", precision="fp32", runtime="onnxruntime"
        )
        raise RuntimeError("export crashed")
    assert leftovers(out) == []


def test_a_role_without_artifacts_fails_finish_and_leaves_nothing(tmp_path):
    with (
        pytest.raises(BundleError, match="field 'models'.*'vocoder' has no artifacts"),
        BundleWriter(tmp_path, name="tts", version="1.0.0", task="tts") as w,
    ):
        w.add_model("acoustic", inputs=[tensor("x", [1])], outputs=[tensor("y", [1])])
        w.add_model("vocoder", inputs=[tensor("x", [1])], outputs=[tensor("y", [1])])
        w.add_artifact("acoustic", b"a", "a.onnx", format="onnx", precision="fp32", runtime="onnxruntime")
        w.finish()
    assert leftovers(tmp_path) == []


def test_leaving_the_block_without_finish_is_an_error(tmp_path):
    with (
        pytest.raises(BundleError, match="ended without finish"),
        BundleWriter(tmp_path, name="ser", version="1.0.0", task="ser"),
    ):
        pass
    assert leftovers(tmp_path) == []


def test_an_existing_bundle_is_kept_unless_overwrite(tmp_path):
    root = write_ser(tmp_path)
    before = (root / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="ser-tiny-1.0.0: already exists; pass overwrite=True"):
        write_ser(tmp_path, onnx=b"new model")
    assert (root / "manifest.json").read_bytes() == before
    assert leftovers(tmp_path) == ["ser-tiny-1.0.0", "ser-tiny-1.0.0.tar.gz"]

    write_ser(tmp_path, onnx=b"new model", overwrite=True)
    assert leftovers(tmp_path) == ["ser-tiny-1.0.0", "ser-tiny-1.0.0.tar.gz"]
    for source in (root, root.with_name("ser-tiny-1.0.0.tar.gz")):
        with load_bundle(source, tmp_dir=tmp_path / "scratch" if source.is_file() else None) as b:
            assert (
                b.artifact_path(b.artifacts(precision="fp32", format="onnx")[0]).read_bytes() == b"new model"
            )


def test_a_bundle_appearing_during_the_build_is_not_clobbered(tmp_path):
    w = BundleWriter(tmp_path, name="ser", version="1.0.0", task="ser")
    w.add_model("classifier", inputs=[tensor("x", [1])], outputs=[tensor("y", [1])])
    w.add_artifact("classifier", b"m", "m.onnx", format="onnx", precision="fp32", runtime="onnxruntime")
    (tmp_path / "ser-1.0.0").mkdir()
    (tmp_path / "ser-1.0.0" / "mine").write_text("keep")
    with pytest.raises(BundleError, match="already exists"):
        w.finish()
    assert leftovers(tmp_path) == ["ser-1.0.0"] and (tmp_path / "ser-1.0.0" / "mine").read_text() == "keep"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"rel_path": "../ser.onnx"}, "artifact '../ser.onnx'.*must not contain '..'"),
        ({"rel_path": "manifest.json"}, "reserved for the bundle"),
        ({"precision": "int4"}, "field 'precision'"),
        ({"fixed_shape": {"audio": [1]}}, "names input 'audio'"),
        ({"fixed_shape": {"x": [1, 2]}}, r"does not fit the input shape \['batch', 8\]"),
        ({"parity": {"max_abs_diff": float("nan")}}, "parity.max_abs_diff is nan"),
        ({"role": "decoder"}, "no model role 'decoder'; add_model\\(\\) it first"),
        ({"src": "/nonexistent/model.onnx"}, "source file /nonexistent/model.onnx not found"),
    ],
)
def test_add_artifact_refuses_bad_entries_before_copying(tmp_path, kwargs, expected):
    args = {
        "role": "classifier",
        "src": b"m",
        "rel_path": "m.onnx",
        "format": "onnx",
        "precision": "fp32",
        "runtime": "onnxruntime",
        **kwargs,
    }
    with BundleWriter(tmp_path, name="ser", version="1.0.0", task="ser") as w:
        w.add_model("classifier", inputs=[tensor("x", ["batch", 8])], outputs=[tensor("y", [1])])
        with pytest.raises(BundleError, match=expected):
            w.add_artifact(**args)
        w.abort()
    assert leftovers(tmp_path) == []


def test_writer_header_errors_name_the_field(tmp_path):
    with pytest.raises(BundleError, match="field 'version'"):
        BundleWriter(tmp_path, name="ser", version="v1", task="ser")
    with pytest.raises(BundleError, match="field 'preprocessing'.*log_mel"):
        BundleWriter(
            tmp_path, name="ser", version="1.0.0", task="ser", preprocessing={"log_mel": {"n_fft": 511}}
        )
    assert leftovers(tmp_path) == []


def test_bundle_errors_are_user_errors():
    assert issubclass(IntegrityError, EdgewiseError) and issubclass(SignatureError, BundleError)


# --- the contract stays light --------------------------------------------------------------------


def test_the_bundle_module_imports_no_torch_no_runtime_and_no_cryptography():
    check = (
        "import sys, edgewise.bundle; "
        "print([m for m in ('torch', 'onnxruntime', 'tensorflow', 'cryptography') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_add_file_binds_a_supporting_file_and_refuses_clashing_or_escaping_paths(tmp_path):
    with BundleWriter(tmp_path / "out", name="ser-tiny", version="1.0.0", task="ser", created=CREATED) as w:
        w.add_model(
            "classifier",
            inputs=[tensor("features", ["batch", "time", 8])],
            outputs=[tensor("logits", ["batch", 4])],
        )
        w.add_artifact(
            "classifier", ONNX, "models/ser.onnx", format="onnx", precision="fp32", runtime="onnxruntime"
        )
        size, digest = w.add_file(b"reference", "models/ser.ref.npz")
        for bad in ("models/ser.onnx", "models/ser.ref.npz", "manifest.json", "../x", "/abs"):
            with pytest.raises(BundleError, match="file"):
                w.add_file(b"x", bad)
        bundle = w.finish()
    assert (size, digest) == (9, hashlib.sha256(b"reference").hexdigest())
    assert (bundle / "models/ser.ref.npz").read_bytes() == b"reference"
    with tarfile.open(w.archive_path) as tar:  # the archive carries it too
        assert "ser-tiny-1.0.0/models/ser.ref.npz" in tar.getnames()


def test_a_deeply_nested_or_oversized_signature_file_is_a_signature_error(tmp_path, keys, capsys):
    """manifest.sig is untrusted: 100,000 '[' (json.loads would hit RecursionError) and a 1 MB
    file are refused as SignatureError, and `edgewise bundle verify` exits 2 without a traceback."""
    from edgewise.cli import main

    d, _ = keys
    root = write_ser(tmp_path, sign_key=d / "signer.pem", archive=False)
    (root / "manifest.sig").write_text("[" * 100_000)
    with pytest.raises(SignatureError, match=r"manifest\.sig: 100000 bytes is over the limit of 4096"):
        verify_signature(root, d / "signer.pub")
    (root / "manifest.sig").write_text("[" * 1000)
    with pytest.raises(SignatureError, match=r"manifest\.sig: nested 1000 levels deep"):
        load_bundle(root, public_key=d / "signer.pub")
    capsys.readouterr()
    assert main(["bundle", "verify", str(root), "--key", str(d / "signer.pub")]) == 2
    err = capsys.readouterr().err
    assert "manifest.sig: nested 1000 levels deep" in err and "Traceback" not in err
