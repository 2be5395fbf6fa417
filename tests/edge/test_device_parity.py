"""Parity on the device: every artifact carries a reference set; installing checks each one here.

Real bundles (the session's tiny export), real onnxruntime and LiteRT, real installs and the real
``edge-deploy`` on this x86_64 machine. The board tests run :func:`check_artifacts` on aarch64.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgewise.bundle import generate_keypair, load_bundle, sha256_file, sign_manifest
from edgewise.devices import load_profile
from edgewise.edge.deploy.local import format_status
from edgewise.edge.deploy.local import status as local_status
from edgewise.edge.install import DeviceParityError, activate, current_install, install_bundle, status
from edgewise.edge.reference import (
    DEVICE_PARITY,
    NOT_CHECKED,
    ReferenceSet,
    check_artifacts,
    failed_on_device,
    read_reference,
    write_reference,
)
from edgewise.edge.runtime import ModelRuntime
from tests.edge.security.conftest import (  # noqa: F401  (fixtures: a real broker, daemon, https server)
    BASE,
    ack_for,
    archive,
    broker,
    daemons,
    keys,
    make_broker,
    mqtt_clients,
    secure_root,
    send_command,
    servers,
    signed_copy,
    signed_v1,
    start_daemon,
)

from .deploy.conftest import run_cli

pytestmark = pytest.mark.slow  # the bundle comes from a (small) training run

WHOLE = "models/ser.reference.npz"
TFLITE_ARTS = ("models/ser.fp32.tflite", "models/ser.int8-dynamic.tflite")
ONNX_ARTS = ("models/ser.fp32.onnx", "models/ser.int8-dynamic.onnx")


@pytest.fixture(scope="module")
def fleet_key(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet-key")
    generate_keypair(folder / "fleet.key", folder / "fleet.pub")
    return folder / "fleet.key", folder / "fleet.pub"


def copy_bundle(src: Path, dest: Path, version: str | None = None) -> Path:
    shutil.copytree(src, dest)
    if version is not None:
        manifest = json.loads((dest / "manifest.json").read_text())
        manifest["version"] = version
        (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return dest


def shift_reference(bundle: Path, rel: str, delta: float, key: Path) -> None:
    """Shift a reference set's expected logits by ``delta``, record the new file in the manifest
    and sign it again: a bundle whose reference the device's kernels cannot meet."""
    inputs, logits = read_reference(bundle / rel)
    write_reference(bundle / rel, inputs, logits + delta)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for art in manifest["models"]["classifier"]["artifacts"]:
        ref = art["extra"]["reference"]
        if ref["path"] == rel:
            ref.update(sha256=sha256_file(bundle / rel), size_bytes=(bundle / rel).stat().st_size)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    sign_manifest(bundle, key)


def test_export_gives_every_artifact_a_reference_set_bound_by_the_manifest(ser_bundle, tmp_path, fleet_key):
    with load_bundle(ser_bundle) as bundle:
        arts = {a.path: a for a in bundle.artifacts("classifier")}
        assert sorted(arts) == sorted([*ONNX_ARTS, *TFLITE_ARTS])
        refs = {path: art.extra["reference"] for path, art in arts.items()}
        # dynamic shapes share the whole-utterance file; the two TFLite files share their window's
        assert {refs[p]["path"] for p in ONNX_ARTS} == {WHOLE}
        window = arts[TFLITE_ARTS[0]].extra["window"]
        assert {refs[p]["path"] for p in TFLITE_ARTS} == {
            f"models/ser.reference.window-{window['frames']}-{window['hop']}.npz"
        }
        files = {ref["path"] for ref in refs.values()}
        assert sum((bundle.root / f).stat().st_size for f in files) < 400_000  # small: a few hundred KB
        for path, ref in refs.items():
            file = bundle.root / ref["path"]
            assert sha256_file(file) == ref["sha256"] and file.stat().st_size == ref["size_bytes"]
            inputs, logits = read_reference(file)
            assert [x.shape[1] for x in inputs] == ref["frames"] and len(inputs) == 3
            assert min(ref["frames"]) < window["frames"] < max(ref["frames"])  # tiled and windowed
            assert ref["export_check"]["machine"] == platform.machine() and ref["export_check"]["passed"]
            assert ref["export_check"]["max_abs_diff"] <= arts[path].parity["tolerance"]
        assert bundle.artifacts("vad")[0].extra.get("reference") is None  # third-party, unchanged
        # whole-utterance and windowed expectations differ: each artifact gets the one it runs
        assert not np.allclose(read_reference(bundle.root / WHOLE)[1], read_reference(file)[1])
    # the manifest's sha256 binds the file, and the signature binds the manifest
    signed = copy_bundle(ser_bundle, tmp_path / "signed")
    sign_manifest(signed, fleet_key[0])
    data = bytearray((signed / WHOLE).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the stored arrays
    (signed / WHOLE).write_bytes(bytes(data))
    with load_bundle(signed, public_key=fleet_key[1]) as bundle:
        results = check_artifacts(bundle, load_profile("x86-local"))
    for path in ONNX_ARTS:
        assert results[path]["status"] == "failed" and "sha256 mismatch" in results[path]["reason"]
    assert all(results[p]["status"] == "passed" for p in TFLITE_ARTS)


def test_install_checks_every_artifact_here_and_records_it(ser_bundle, tmp_path, capsys):
    root = tmp_path / "root"
    rc, out, err = run_cli(capsys, "--device", "local", "--root", root, ser_bundle)
    assert rc == 0, err
    record = json.loads((root / "models" / "ser-tiny" / "1.0.0" / DEVICE_PARITY).read_text())
    assert record["machine"] == platform.machine() and record["verdict"] == "ok"
    assert record["profile"] == "x86-local" and "onnxruntime" in record["runtimes"]
    for path in [*ONNX_ARTS, *TFLITE_ARTS]:
        result = record["artifacts"][path]
        assert result["status"] == "passed", result
        assert 0 <= result["max_abs_diff"] <= result["tolerance"] and result["inputs"] == 3
        assert result["machine"] == platform.machine() and result["in_profile"]
        assert result["runtime"].startswith("onnxruntime" if path.endswith(".onnx") else "ai-edge-litert")
        assert result["export"]["machine"] == platform.machine()
        # one line per artifact in edge-deploy's output
        assert f"ser-tiny/1.0.0: device parity: {path} on {platform.machine()}: max |diff| " in out
    assert record["artifacts"]["models/vad.silero.onnx"]["status"] == "not checked"
    # status shows the current install's check, as text and as JSON (key "parity")
    info = local_status(load_profile("x86-local"), root)
    assert info["parity"]["artifacts"]["models/ser.fp32.onnx"]["status"] == "passed"
    text = format_status(info)
    assert f"parity     4 passed, 1 not checked on {platform.machine()} (profile x86-local)" in text
    assert "models/ser.int8-dynamic.tflite on " in text and " ok" in text
    rc, out, err = run_cli(capsys, "status", "--device", "local", "--root", root, "--json")
    assert rc == 0 and json.loads(out)["parity"]["machine"] == platform.machine()


def test_an_artifact_failing_its_reference_here_is_never_run(ser_bundle, tmp_path, fleet_key):
    key, pub = fleet_key
    bundle = copy_bundle(ser_bundle, tmp_path / "b")
    shift_reference(bundle, WHOLE, 1.0, key)  # the ONNX artifacts' expectation, 10x beyond fp32's
    root = tmp_path / "root"
    installed = install_bundle(root, bundle, public_key=pub, profile=load_profile("x86-local"))
    record = json.loads((installed / DEVICE_PARITY).read_text())
    fp32 = record["artifacts"]["models/ser.fp32.onnx"]
    assert fp32["status"] == "failed" and fp32["max_abs_diff"] > fp32["tolerance"]
    assert record["artifacts"]["models/ser.int8-dynamic.tflite"]["status"] == "passed"
    rt = ModelRuntime.open(installed, load_profile("x86-local"), public_key=pub)
    assert rt.artifact.path == "models/ser.int8-dynamic.tflite"  # x86-local's next preference
    assert rt.skipped[0].startswith(
        f"onnx fp32 (models/ser.fp32.onnx): failed the device parity check at install on {platform.machine()}"
    )
    assert f"max |diff| {fp32['max_abs_diff']:.3g} > {fp32['tolerance']:.3g}" in rt.skipped[0]
    # the bundle itself (no device record beside it) still runs its first preference
    assert ModelRuntime.open(bundle, load_profile("x86-local")).artifact.path == "models/ser.fp32.onnx"


def test_when_every_artifact_fails_here_the_deploy_is_refused_and_the_old_version_runs(
    ser_bundle, tmp_path, fleet_key, capsys
):
    key, pub = fleet_key
    root = tmp_path / "root"
    v1 = copy_bundle(ser_bundle, tmp_path / "ser-tiny-1.0.0")
    sign_manifest(v1, key)
    assert run_cli(capsys, "--device", "local", "--root", root, "--key", pub, v1)[0] == 0
    v2 = copy_bundle(ser_bundle, tmp_path / "ser-tiny-2.0.0", version="2.0.0")
    with load_bundle(v2) as opened:
        files = {a.extra["reference"]["path"] for a in opened.artifacts("classifier")}
    for rel in sorted(files):
        shift_reference(v2, rel, 1.0, key)
    rc, out, err = run_cli(capsys, "--device", "local", "--root", root, "--key", pub, v2)
    assert rc == 2
    assert (
        "ser-tiny/2.0.0 is refused: every artifact x86-local could run fails the device parity check" in err
    )
    assert "models/ser.fp32.onnx: max |diff| " in err and " > 0.0001 " in err  # the diff and the tolerance
    assert "models/ser.int8-dynamic.tflite" in err and "nothing was installed or switched" in err
    assert current_install(root) == root / "models" / "ser-tiny" / "1.0.0"
    assert not (root / "models" / "ser-tiny" / "2.0.0").exists()
    assert not list((root / "models" / "ser-tiny").glob(".*partial*"))
    assert status(root)["current"] == "ser-tiny/1.0.0"
    with pytest.raises(DeviceParityError, match="every artifact this device could run"):
        install_bundle(root, v2, public_key=pub)  # without a profile: every artifact of the bundle


def test_an_older_bundle_without_reference_sets_installs_unchecked(ser_bundle, tmp_path, capsys):
    bundle = copy_bundle(ser_bundle, tmp_path / "old")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for art in manifest["models"]["classifier"]["artifacts"]:
        (bundle / art["extra"].pop("reference")["path"]).unlink(missing_ok=True)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    root = tmp_path / "root"
    rc, out, err = run_cli(capsys, "--device", "local", "--root", root, bundle)
    assert rc == 0, err
    assert f"device parity: {NOT_CHECKED}" in out
    record = json.loads((current_install(root) / DEVICE_PARITY).read_text())
    assert record["verdict"] == "not checked" and record["refused"] is None
    assert f"parity     {NOT_CHECKED} on {platform.machine()}" in format_status(status(root))


def test_an_install_from_before_the_check_is_checked_when_installed_again(ser_bundle, tmp_path):
    root = tmp_path / "root"
    installed = install_bundle(root, ser_bundle)
    (installed / DEVICE_PARITY).unlink()  # what an older edgewise left
    activate(root, installed)
    assert "not checked (installed before" in format_status(status(root))
    assert install_bundle(root, ser_bundle) == installed
    assert json.loads((installed / DEVICE_PARITY).read_text())["verdict"] == "ok"


def test_a_record_made_on_another_machine_is_checked_again_here(ser_bundle, tmp_path):
    """A root prepared on an x86 machine and copied to an ARM device: the copied record says
    nothing about this device's kernels, so installing the version again checks it here."""
    root = tmp_path / "root"
    installed = install_bundle(root, ser_bundle)
    record = json.loads((installed / DEVICE_PARITY).read_text())
    record["machine"] = "riscv64"
    (installed / DEVICE_PARITY).write_text(json.dumps(record))
    assert install_bundle(root, ser_bundle) == installed
    assert json.loads((installed / DEVICE_PARITY).read_text())["machine"] == platform.machine()


def test_a_reference_set_reports_wrong_shapes_and_non_finite_logits():
    inputs = [np.zeros((1, 5, 4), np.float32)]
    ref = ReferenceSet(inputs, np.zeros((1, 3), np.float32), 0.1, "r.npz")
    assert ref.compare(lambda x: np.zeros((1, 3), np.float32))["passed"]
    wrong = ref.compare(lambda x: np.zeros((1, 2), np.float32))
    assert not wrong["passed"] and "logits of shape (1, 2) on r.npz, expected (1, 3)" in wrong["reason"]
    nan = ref.compare(lambda x: np.full((1, 3), np.nan, np.float32))
    assert not nan["passed"] and nan["max_abs_diff"] is None and "not finite" in nan["reason"]


@pytest.mark.timeout(180)
def test_an_mqtt_deploy_is_checked_on_the_device_too(
    secure_root,  # noqa: F811  (the fixtures imported above)
    broker,  # noqa: F811
    daemons,  # noqa: F811
    mqtt_clients,  # noqa: F811
    servers,  # noqa: F811
    keys,  # noqa: F811
    ser_bundle,
    tmp_path,
):
    """A real daemon process and broker: the MQTT ``deploy`` installs through the same check."""
    fleet, www, https = keys["fleet"], servers["www"], servers["https"]
    all_off = signed_copy(ser_bundle, tmp_path / "src" / "a", "1.1.0", None)
    with load_bundle(all_off) as opened:
        files = {a.extra["reference"]["path"] for a in opened.artifacts("classifier")}
    for rel in sorted(files):
        shift_reference(all_off, rel, 1.0, fleet["key"])
    onnx_off = signed_copy(ser_bundle, tmp_path / "src" / "b", "1.2.0", None)
    shift_reference(onnx_off, WHOLE, 1.0, fleet["key"])
    refused, partly = archive(all_off, www), archive(onnx_off, www)

    operator = mqtt_clients(broker)
    assert operator.connected()
    operator.subscribe(f"{BASE}/cmd/ack")
    d = start_daemon(
        daemons, secure_root, broker, public_key=str(fleet["pub"]), download={"ca": str(servers["ca"])}
    )

    def deploy(url):
        return ack_for(operator, send_command(operator, "deploy", {"url": url}))

    ack = deploy(https.url(refused.name))
    assert not ack.ok and "ser-tiny/1.1.0 is refused: every artifact" in ack.error
    assert (
        "could run fails the device parity check" in ack.error
        and "models/ser.fp32.onnx: max |diff|" in ack.error
    )
    assert status(secure_root)["current"] == "ser-tiny/1.0.0" and d.health()["model"] == "ser-tiny/1.0.0"
    assert not (secure_root / "models" / "ser-tiny" / "1.1.0").exists()

    ack = deploy(https.url(partly.name))
    assert ack.ok and ack.result["model"] == "ser-tiny/1.2.0", ack
    running = ack_for(operator, send_command(operator, "status")).result
    assert running["pipeline"]["artifact"] == "models/ser.int8-dynamic.tflite"  # fp32 ONNX failed here
    assert running["parity"]["artifacts"]["models/ser.fp32.onnx"]["status"] == "failed"
    assert d.stop() == 0


def test_an_artifact_that_cannot_be_loaded_at_install_is_skipped_not_failed(ser_bundle, tmp_path):
    """A load error is not a wrong answer (a busy GPU, a provider that did not start): the record
    says skipped and why, and the runtime does not hold it against the artifact later."""
    from tests.edge.deploy.test_rollback_daemon import BROKEN, with_unloadable_model

    bundle = with_unloadable_model(ser_bundle, tmp_path / "bundles")
    installed = install_bundle(tmp_path / "root", bundle)
    result = json.loads((installed / DEVICE_PARITY).read_text())["artifacts"][BROKEN]
    assert result["status"] == "skipped" and "could not load it here now" in result["reason"]
    with load_bundle(installed) as opened:
        assert BROKEN not in failed_on_device(opened)
