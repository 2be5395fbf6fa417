"""Pre-flight: does this bundle suit this device, and does its model run here?

The rules, checked in this order before anything on the device changes:

1. the bundle verifies (manifest schema, every artifact's size and sha256, the signature with
   ``--key``) — :func:`edgewise.bundle.load_bundle` does it;
2. the bundle's main model has an artifact matching one of the profile's runtime preferences
   (format, precision, quantization mode) that did not fail its parity gate at export, else the
   bundle is "for another runtime/architecture" and the error lists both sides;
3. at least one such artifact fits the profile's memory budget;
4. on the device itself (a local deploy): this machine's architecture is the profile's, and
   :class:`~edgewise.edge.runtime.ModelRuntime` opens the installed bundle (building and caching
   the TensorRT engine on a Jetson) and one inference on a second of zero features gives finite
   scores of the right shape (:func:`smoke_test`).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bundle import ArtifactEntry, Bundle, load_bundle
from edgewise.devices import DeviceProfile, RuntimeChoice
from edgewise.edge.deploy import DeployError
from edgewise.edge.runtime import ModelRuntime, matching_artifacts
from edgewise.features import num_frames


class WrongRuntime(DeployError):
    """The bundle has nothing the device profile runs."""


def task_roles(bundle: Bundle) -> list[str]:
    """The models a device must be able to run: the task's roles (task registry), else the first role."""
    from edgewise.tasks import TASKS

    models = bundle.manifest.models
    spec = TASKS.get(bundle.manifest.task)
    roles = [r for r in spec.roles if r in models] if spec else []
    return roles or [next(iter(models))]


def primary_role(bundle: Bundle) -> str:
    """The model a device must be able to run first: ``classifier`` for SER, ``tts_encoder`` for TTS."""
    return task_roles(bundle)[0]


def describe_artifact(art: ArtifactEntry) -> str:
    quant = art.quant
    gate = " [failed its parity gate]" if art.parity.get("passed") is False else ""
    return f"{art.format} {art.precision}" + (f" ({quant})" if quant else "") + gate


def bundle_key(bundle: Bundle) -> str:
    return f"{bundle.manifest.name}/{bundle.manifest.version}"


def check_runtime_match(bundle: Bundle, profile: DeviceProfile) -> list[tuple[RuntimeChoice, ArtifactEntry]]:
    """The (preference, artifact) pairs the device could run for the bundle's first model, best
    first; raises WrongRuntime when that model, or any other model of the task, has none."""
    roles = task_roles(bundle)
    for role in roles[1:]:
        _runnable(bundle, profile, role)
    return _runnable(bundle, profile, roles[0])


def _runnable(bundle: Bundle, profile: DeviceProfile, role: str) -> list[tuple[RuntimeChoice, ArtifactEntry]]:
    name = f"{bundle.manifest.name} {bundle.manifest.version}"
    runtimes = profile.runtimes_for(bundle.manifest.task)
    pairs = [(c, a) for c in runtimes for a in matching_artifacts(bundle, role, c)]
    usable = [(c, a) for c, a in pairs if a.parity.get("passed") is not False]
    if not usable:
        have = ", ".join(describe_artifact(a) for a in bundle.artifacts(role)) or "no artifacts"
        want = ", ".join(c.describe() for c in runtimes)
        raise WrongRuntime(
            f"{name} is a bundle for another runtime/architecture: {profile.name} ({profile.arch}, "
            f"accelerator {profile.accelerator}) runs {want}; the bundle's {role!r} model has {have}. "
            f"Export it for this device (edgewise export --format/--precision) or pick another --device"
        )
    budget = profile.memory_budget_mb * 1024 * 1024
    fitting = [(c, a) for c, a in usable if a.size_bytes <= budget]
    if not fitting:
        sizes = ", ".join(f"{describe_artifact(a)} {a.size_bytes / 2**20:.1f} MB" for _, a in usable)
        raise DeployError(
            f"{name}: every artifact {profile.name} could run is over its memory budget of "
            f"{profile.memory_budget_mb} MB ({sizes})"
        )
    return fitting


def check_arch(profile: DeviceProfile, *, any_arch: bool = False, machine: str | None = None) -> None:
    """A local deploy must run on the profile's architecture (a laptop is not the Raspberry Pi)."""
    machine = machine or platform.machine()
    if machine != profile.arch and not any_arch:
        raise DeployError(
            f"device {profile.name} is {profile.arch} but this machine is {machine}: to deploy to the "
            "device add --host user@addr; to install here anyway (testing) add --any-arch"
        )


def smoke_test(runtime: ModelRuntime) -> dict[str, Any]:
    """One inference on a second of zero features; raises DeployError unless the scores are sane."""
    manifest = runtime.bundle.manifest
    if "log_mel" not in manifest.preprocessing:
        return {"inference": "skipped (no log_mel front-end in the manifest)"}
    cfg = manifest.log_mel()
    frames = num_frames(cfg.sample_rate, cfg)
    features = np.zeros((1, frames, cfg.n_mels), dtype=np.float32)
    t0 = time.perf_counter()
    try:
        out = np.asarray(runtime.backend(features))
    except Exception as exc:  # any runtime failure is the model's problem, reported, not a crash
        raise DeployError(
            f"{runtime.artifact.path}: inference on 1 s of zero features failed: {type(exc).__name__}: {exc}"
        ) from None
    ms = (time.perf_counter() - t0) * 1000
    classes = len(manifest.labels) if manifest.labels else None
    if out.ndim != 2 or out.shape[0] != 1 or (classes is not None and out.shape[1] != classes):
        raise DeployError(
            f"{runtime.artifact.path}: output shape {tuple(out.shape)} on one second of features; "
            f"expected (1, {classes if classes is not None else 'classes'})"
        )
    if not np.isfinite(out).all():
        raise DeployError(f"{runtime.artifact.path}: inference on 1 s of zero features gave NaN or infinity")
    return {"inference": f"{frames} frames in {ms:.1f} ms", "inference_ms": round(ms, 3)}


def open_and_test(
    bundle_dir: str | Path,
    profile: DeviceProfile,
    *,
    public_key: str | Path | None = None,
    engine_dir: Path | None = None,
) -> dict[str, Any]:
    """Open ``bundle_dir`` the way the daemon will and run :func:`smoke_test`; returns what ran."""
    from edgewise.tasks import TASKS

    with load_bundle(bundle_dir, public_key=public_key) as bundle:
        spec = TASKS.get(bundle.manifest.task)
        if spec is not None and spec.input_kind == "text":
            return speak_test(bundle, profile)
        if spec is not None and callable(getattr(spec.load("pipeline"), "self_test", None)):
            return pipeline_test(bundle, profile)
        runtime = ModelRuntime.open(bundle, profile, role=primary_role(bundle), engine_dir=engine_dir)
        try:
            return {**runtime.describe(), **smoke_test(runtime)}
        finally:
            runtime.backend = None  # release the session before the bundle folder goes


def pipeline_test(bundle: Bundle, profile: DeviceProfile) -> dict[str, Any]:
    """The smoke test of a family whose pipeline tests itself (``self_test``: the recommender's one
    request); raises DeployError naming what failed."""
    from edgewise.tasks import task_spec

    pipeline = task_spec(bundle.manifest.task).load("pipeline").from_bundle(bundle, profile)
    t0 = time.perf_counter()
    try:
        pipeline.self_test()
    except Exception as exc:  # any failure is the bundle's problem on this device, reported
        raise DeployError(f"{bundle.root.name}: self-test failed: {type(exc).__name__}: {exc}") from None
    finally:
        described = pipeline.describe()
        pipeline.close()
    ms = (time.perf_counter() - t0) * 1000
    return {**described, "inference": f"self-test in {ms:.1f} ms", "inference_ms": round(ms, 3)}


def speak_test(bundle: Bundle, profile: DeviceProfile) -> dict[str, Any]:
    """A voice's smoke test: its pipeline says one short sentence; raises DeployError unless the
    audio is there and finite."""
    from edgewise.tasks import task_spec

    pipeline = task_spec(bundle.manifest.task).load("pipeline").from_bundle(bundle, profile)
    runtimes = list(pipeline.runtimes.values())
    try:
        utterance = pipeline.synthesize("Ready.")
    except Exception as exc:  # any failure is the bundle's problem on this device, reported
        raise DeployError(
            f"{bundle.root.name}: saying 'Ready.' failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        described = pipeline.describe()
        pipeline.close()
    if utterance.audio.size == 0 or not np.isfinite(utterance.audio).all():
        raise DeployError(f"{bundle.root.name}: saying 'Ready.' gave no finite audio")
    t = utterance.timings
    return {
        **described,
        "artifact": ", ".join(rt.artifact.path for rt in runtimes),
        "backend": ", ".join(sorted({rt.backend.describe() for rt in runtimes})),
        "inference": f"'Ready.' ({utterance.seconds:.2f} s of audio) in {t['total'] * 1000:.0f} ms",
        "inference_ms": round(t["total"] * 1000, 3),
    }
