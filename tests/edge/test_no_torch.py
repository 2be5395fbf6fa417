"""Devices have no room for torch: no module that runs on a device may import it.

That is every module of the package except the two torch halves (edgewise.cloud: training,
edgewise.export: export), listed from the files so a new module is covered the day it is added:
edgewise.edge, edgewise.bench (runs on devices too), and the shared contract (edgewise/*.py and
any shared package beside them). Each is imported in one fresh interpreter; an import hook names
the module whose import pulled a forbidden package in, with the chain of edgewise imports that led
there. (Running the Silero VAD without torch is checked in tests/edge/audio/test_no_torch.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TORCH_HALVES = ("edgewise.cloud", "edgewise.export")
# torch and what pulls it in (the silero-vad package's __init__ imports torch); matplotlib is for
# the workstation's plots only
FORBIDDEN = ("torch", "torchaudio", "silero_vad", "matplotlib")

CHECK = r"""
import importlib, json, sys, traceback

forbidden, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
culprits = {}

class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in forbidden and top not in culprits:
            chain = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack() if "/edgewise/" in f.filename]
            culprits[top] = {"module": current, "chain": chain}
        return None  # only watch; the normal finders import it

sys.meta_path.insert(0, Watch())
failed = {}
for current in modules:
    try:
        importlib.import_module(current)
    except Exception as exc:
        failed[current] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"culprits": culprits, "failed": failed,
                  "loaded": sorted(m for m in forbidden if m in sys.modules)}))
"""


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def device_modules() -> list[str]:
    """Every module under edgewise/ outside the torch halves, from the files (no __main__)."""
    names = {module_name(p) for p in (REPO / "edgewise").rglob("*.py") if p.name != "__main__.py"}
    return sorted(n for n in names if not n.startswith(TORCH_HALVES))


def imports_in_a_fresh_interpreter(modules: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(FORBIDDEN), json.dumps(modules)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def describe(report: dict) -> str:
    lines = [
        f"{pkg} was imported by {c['module']}, through:\n    " + "\n    ".join(c["chain"])
        for pkg, c in report["culprits"].items()
    ]
    lines += [f"{m} failed to import: {err}" for m, err in report["failed"].items()]
    return "\n".join(lines)


def test_the_module_list_comes_from_the_files():
    modules = device_modules()
    for expected in (
        "edgewise.edge",
        "edgewise.edge.daemon",
        "edgewise.edge.telemetry.client",
        "edgewise.edge.deploy.cli",
        "edgewise.edge.audio.vad",
        "edgewise.bench.runner",
        "edgewise.bench.report",
        "edgewise.features",
        "edgewise.config",
        "edgewise.errors",
        "edgewise.cli",
    ):
        assert expected in modules
    assert not any(m.startswith(TORCH_HALVES) or m.endswith("__main__") for m in modules)
    assert len(modules) >= 40


def test_no_device_module_imports_torch():
    report = imports_in_a_fresh_interpreter(device_modules())
    assert report["loaded"] == [] and not report["failed"], describe(report)


def test_the_check_names_the_module_that_pulled_torch_in():
    """Guards the test above against passing vacuously: the trainer's checkpoint module does
    import torch, and the report says it was that module."""
    report = imports_in_a_fresh_interpreter(["edgewise.errors", "edgewise.cloud.train.checkpoint"])
    assert "torch" in report["loaded"]
    culprit = report["culprits"]["torch"]
    assert culprit["module"] == "edgewise.cloud.train.checkpoint"
    assert any("edgewise/cloud/train/checkpoint.py" in frame for frame in culprit["chain"])
    assert "edgewise.cloud.train.checkpoint" in describe(report)


def test_importing_the_audio_package_leaves_the_device_libraries_unloaded():
    """sounddevice and onnxruntime load when a source or VAD is used, not on import."""
    audio = [m for m in device_modules() if m.startswith("edgewise.edge.audio")]
    code = "import importlib, sys, json\n"
    code += f"[importlib.import_module(m) for m in {audio!r}]\n"
    code += "print(json.dumps(sorted(m for m in ('sounddevice', 'onnxruntime') if m in sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [], audio


def test_the_device_runtime_does_not_use_the_dev_tools():
    """The local Mosquitto launcher (edgewise.devtools) is for tests and the demo, never the device."""
    importers = [
        str(p.relative_to(REPO))
        for p in (REPO / "edgewise" / "edge").rglob("*.py")
        if "edgewise.devtools" in p.read_text()
    ]
    assert importers == []
