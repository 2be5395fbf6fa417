"""The benchmark runs on devices: none of its modules imports torch or matplotlib when imported."""

import subprocess
import sys

MODULES = (
    "edgewise.bench.commands, edgewise.bench.runner, edgewise.bench.worker, edgewise.bench.workers, "
    "edgewise.bench.ceiling, edgewise.bench.report, edgewise.bench.remote, edgewise.bench.environment, "
    "edgewise.bench.schema"
)
CHECK = "import sys, {mods}; bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"


def test_bench_modules_import_neither_torch_nor_matplotlib():
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(mods=MODULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
