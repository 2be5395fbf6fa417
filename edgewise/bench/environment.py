"""What the benchmark ran on: CPU, cores, OS, Python, runtime versions, load average (no torch import)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
from pathlib import Path
from typing import Any

# package name -> module it provides (a package counts only when its module is importable here)
# variables that change how runtimes' thread pools behave (recorded when set)
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)
# an emulated board (edgewise board) carries this file: one line, what the emulation is; a real device has none
EMULATED_MARKER = "/etc/edgewise-emulated"
# where to look instead (tests run "the device" on this machine, which must not carry the real marker)
EMULATED_MARKER_ENV = "EDGEWISE_EMULATED_MARKER"
RUNTIME_PACKAGES = {
    "onnxruntime": "onnxruntime",
    "ai-edge-litert": "ai_edge_litert",
    "tflite-runtime": "tflite_runtime",
    "tensorrt": "tensorrt",
    "numpy": "numpy",
    "onnx": "onnx",
}


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (x86 ``model name``; ARM boards ``Model``/``Hardware``)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if sep and value and key not in found:
            found[key] = value
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if key in found:
            return found[key]
    if "CPU part" in found:  # ARM without a name: implementer and part number
        return f"ARM implementer {found.get('CPU implementer', '?')} part {found['CPU part']}"
    return platform.processor() or platform.machine() or "unknown"


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def package_version(package: str, module: str | None = None) -> str | None:
    """The installed version of ``package``, or None when its module cannot be imported here."""
    if module is not None and importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def onnxruntime_providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def emulation_note() -> str | None:
    """What the emulation is, when this machine is an emulated board; ``None`` on real hardware.

    Decided here, on the device, and only by the marker file ``/etc/edgewise-emulated`` (its first
    non-empty line; ``$EDGEWISE_EMULATED_MARKER`` names another file, for tests): a report's timings
    are labelled emulated exactly when the machine that measured them says it is one.
    """
    marker = Path(os.environ.get(EMULATED_MARKER_ENV) or EMULATED_MARKER)
    try:
        text = marker.read_text(errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:  # there but unreadable: still a board, say so rather than pass as hardware
        return f"emulated ({marker} unreadable: {exc.strerror})"
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line or f"emulated ({marker} is empty)"


def environment(threads: int, with_torch: bool) -> dict[str, Any]:
    runtimes = {pkg: package_version(pkg, mod) for pkg, mod in RUNTIME_PACKAGES.items()}
    if with_torch:
        runtimes["torch"] = package_version("torch", "torch")
    return {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cores_logical": os.cpu_count(),
        "cores_usable": usable_cores(),
        "threads": threads,
        "os": os_name(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "runtimes": runtimes,
        "onnxruntime_providers": onnxruntime_providers(),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "load_average_start": load_average(),
        "emulated": emulation_note(),
    }
