"""Device profiles: one YAML per device, validated by :class:`DeviceProfile`.

A profile says what the device is (architecture, accelerator), which artifact to run in order of
preference (format, precision, quantization mode, onnxruntime execution providers), how many
threads to use, how much memory the model may take, and where edgewise installs on it. The edge
runtime walks ``runtimes`` in order and takes the first artifact that the bundle has and that loads
here, logging why it passed over the others. An optional ``offload:`` section says when the device
asks the cloud and how long it waits (:mod:`edgewise.edge.offload.config`; ``daemon.yaml`` may
override it key by key).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgewise.config import StrictModel, load_config
from edgewise.edge.offload.config import OffloadConfig
from edgewise.errors import ConfigError

__all__ = ["DeviceProfile", "RuntimeChoice", "list_profiles", "load_profile"]


class RuntimeChoice(StrictModel):
    """One preference: an artifact format and precision, and how to run it."""

    format: Literal["onnx", "tflite", "tensorrt-onnx"]
    precision: Literal["fp32", "fp16", "int8"]
    quant: Literal["dynamic", "static"] | None = None
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    note: str = ""

    def describe(self) -> str:
        quant = f" ({self.quant})" if self.quant else ""
        return f"{self.format} {self.precision}{quant}"


class DeviceProfile(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str
    arch: Literal["aarch64", "x86_64", "armv7l"]
    accelerator: Literal["none", "cuda"] = "none"
    runtimes: list[RuntimeChoice] = Field(min_length=1)
    threads: int = Field(ge=1, le=64)
    memory_budget_mb: int = Field(ge=16)
    install_root: str
    python: str = "python3"
    # the CPython (X.Y) and glibc (2.N) that ``python`` is on the device's stock OS: the wheels
    # ``edge-deploy wheelhouse`` downloads for it (unset: pass --python; glibc defaults to 2.28)
    python_version: str | None = Field(default=None, pattern=r"^3\.[0-9]+$")
    glibc: str | None = Field(default=None, pattern=r"^2\.[0-9]+$")
    # the device's CPU core as qemu names it (``qemu-aarch64 -cpu help``): what an emulated board
    # runs as, so the runtimes pick the device's own kernels (qemu's default, ``max``, has SVE2 and
    # i8mm, which no Raspberry Pi or Jetson here has); unset: ``max``
    qemu_cpu: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]*$")
    service_user: str = "edgewise"
    notes: str = ""
    # per bundle task (e.g. tts): its own order of preference; tasks not named use ``runtimes``
    task_runtimes: dict[str, list[RuntimeChoice]] = Field(default_factory=dict)
    # when the device asks the cloud (edgewise.edge.offload.config): checked for shape here, in full
    # (url, files) where it runs; unset: never
    offload: OffloadConfig | None = None

    def runtimes_for(self, task: str) -> list[RuntimeChoice]:
        return self.task_runtimes.get(task) or self.runtimes


def _profile_dir() -> Path:
    return Path(str(resources.files("edgewise.devices")))


@cache
def list_profiles() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in _profile_dir().glob("*.yaml")))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name (``rpi5``; ``jetson`` means ``jetson-orin-nano``) or a YAML path."""
    aliases = {"jetson": "jetson-orin-nano", "rpi": "rpi5", "local": "x86-local"}
    name = str(name_or_path)
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        name = aliases.get(name, name)
        if name not in list_profiles():
            raise ConfigError(f"unknown device {name_or_path!r}; known devices: {', '.join(list_profiles())}")
        path = _profile_dir() / f"{name}.yaml"
    profile = load_config(DeviceProfile, path)
    if path.parent == _profile_dir() and profile.name != path.stem:
        raise ConfigError(f"{path}: name {profile.name!r} must match the file name {path.stem!r}")
    return profile
