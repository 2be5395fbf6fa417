"""edge-deploy runs on the devices: none of its modules may pull torch in."""

import subprocess
import sys

MODULES = ", ".join(
    f"edgewise.edge.deploy.{m}"
    for m in ("cli", "local", "remote", "bootstrap", "inventory", "preflight", "ssh")
)


def test_deploy_modules_do_not_import_torch():
    code = f"import sys, {MODULES}; print([m for m in ('torch',) if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
