"""The command line: help everywhere, torch-free start-up, exit codes scripts can rely on."""

import subprocess
import sys

import pytest

from edgewise.cli import COMMANDS, main


def test_every_command_has_help(capsys):
    for group, command, *_ in COMMANDS:
        argv = [group, command, "--help"] if command else [group, "--help"]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "usage: edgewise" in capsys.readouterr().out


def test_help_does_not_import_torch():
    code = (
        "import sys; from edgewise.cli import build_parser; build_parser(); sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_user_error_is_one_line_and_exit_code_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "edgewise", "eval", "ser", str(tmp_path / "no-run"), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("edgewise: error:") and "Traceback" not in result.stderr
    assert "no-run" in result.stderr


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "ser", "--no-such-flag"])
    assert exc.value.code == 2
