"""The ``vllm serve`` command of a config: presets, parallelism, TLS, the key kept off the command
line, and what happens where vLLM is not installed (it is not, here: no GPU). The launch itself is
checked with a stand-in ``vllm`` program that records what it was started with."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgewise.cloud.serve.auth import write_secret
from edgewise.cloud.serve.commands import serve_add_arguments, serve_run
from edgewise.cloud.serve.config import load_serve_config
from edgewise.cloud.serve.vllm import PRESETS, vllm_command
from edgewise.errors import ConfigError, MissingDependencyError
from tests.cloud.serve.conftest import REPO


@pytest.fixture
def folder(tmp_path) -> Path:
    from edgewise.devtools.tls import self_signed_cert

    self_signed_cert(tmp_path / "tls")
    write_secret(tmp_path / "client" / "token", "the-clients-token\n")
    return tmp_path


def config(folder: Path, **vllm) -> object:
    data = {
        "engine": "vllm",
        "host": "0.0.0.0",
        "port": 8000,
        "vllm": {"api_key_file": "client/token", **vllm},
    }
    return load_serve_config(data, base=folder)


def test_keye_preset(folder):
    launch = vllm_command(config(folder, preset="keye-vl-8b"))
    assert launch.argv == [
        "vllm", "serve", "Kwai-Keye/Keye-VL-8B-Preview", "--host", "0.0.0.0", "--port", "8000",
        "--served-model-name", "keye-vl-8b", "--tensor-parallel-size", "1", "--pipeline-parallel-size", "1",
        "--max-model-len", "16384", "--dtype", "bfloat16", "--trust-remote-code",
        "--ssl-certfile", str(folder / "tls/server.pem"), "--ssl-keyfile", str(folder / "tls/server.key"),
    ]  # fmt: skip
    assert launch.env == {"VLLM_API_KEY": "the-clients-token"}
    assert not any("the-clients-token" in arg for arg in launch.argv)  # ps shows argv to everyone


def test_onerec_preset_multi_node_with_overrides(folder):
    launch = vllm_command(
        config(folder, preset="onerec-8b", tensor_parallel_size=4, pipeline_parallel_size=2, nodes=2,
               max_model_len=4096, gpu_memory_utilization=0.85, load_format="dummy", extra_args=["--seed", "1"])
    )  # fmt: skip
    assert launch.argv == [
        "vllm", "serve", "OpenOneRec/OneRec-8B", "--host", "0.0.0.0", "--port", "8000",
        "--served-model-name", "onerec-8b", "--tensor-parallel-size", "4", "--pipeline-parallel-size", "2",
        "--distributed-executor-backend", "ray", "--max-model-len", "4096", "--gpu-memory-utilization", "0.85",
        "--dtype", "bfloat16", "--load-format", "dummy",
        "--ssl-certfile", str(folder / "tls/server.pem"), "--ssl-keyfile", str(folder / "tls/server.key"),
        "--seed", "1",
    ]  # fmt: skip
    assert "--trust-remote-code" not in launch.argv  # Qwen3: built into vLLM
    assert any("ray start --head" in note for note in launch.notes)
    assert any("random weights" in note for note in launch.notes)


def test_a_local_model_folder_and_plain_loopback(folder):
    (folder / "ckpt").mkdir()
    data = {
        "engine": "vllm",
        "tls": "none",
        "auth": "none",
        "vllm": {"model": "ckpt", "trust_remote_code": False},
    }
    launch = vllm_command(load_serve_config(data, base=folder))
    assert launch.argv[:3] == ["vllm", "serve", str(folder / "ckpt")]
    assert (
        "--ssl-certfile" not in launch.argv and launch.env == {} and "--served-model-name" not in launch.argv
    )
    # a preset's need can be turned off by saying so
    data = {
        "engine": "vllm",
        "tls": "none",
        "auth": "none",
        "vllm": {"preset": "keye-vl-8b", "trust_remote_code": False},
    }
    assert "--trust-remote-code" not in vllm_command(load_serve_config(data, base=folder)).argv


def test_presets_name_the_hub_models():
    assert (
        PRESETS["keye-vl-8b"]["model"] == "Kwai-Keye/Keye-VL-8B-Preview"
        and PRESETS["keye-vl-8b"]["trust_remote_code"]
    )
    assert PRESETS["onerec-8b"]["model"] == "OpenOneRec/OneRec-8B"


def run(config_path: Path, *flags: str) -> int:
    parser = argparse.ArgumentParser()
    serve_add_arguments(parser)
    return serve_run(parser.parse_args(["--config", str(config_path), *flags]))


def write(folder: Path, **vllm) -> Path:
    import yaml

    path = folder / "config.yaml"
    data = {"engine": "vllm", "port": 8000, "vllm": {"api_key_file": "client/token", **vllm}}
    path.write_text(yaml.safe_dump(data))
    return path


def test_print_command_shows_the_key_source_not_the_key(folder, capsys):
    assert run(write(folder, preset="keye-vl-8b"), "--print-command", "--dummy-weights") == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f'VLLM_API_KEY="$(cat {folder / "client/token"})" vllm serve Kwai-Keye/Keye-VL-8B-Preview'
    )
    assert "--load-format dummy" in out and "--trust-remote-code" in out and "the-clients-token" not in out
    assert "# --load-format dummy: random weights" in out


def test_without_vllm_installed_the_error_says_what_is_missing(folder):
    with pytest.raises(
        MissingDependencyError,
        match=r"vLLM is not installed here \(no 'vllm-absent' program found\).*pip install vllm",
    ):
        run(write(folder, preset="onerec-8b", executable="vllm-absent"))


def test_an_unreadable_key_file_is_refused_before_launch(folder):
    (folder / "client" / "token").chmod(0o644)
    with pytest.raises(ConfigError, match="vllm.api_key_file: .* readable by others"):
        vllm_command(config(folder, preset="onerec-8b"))


def test_vllm_only_flags_are_refused_for_other_engines(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("models: [{id: ser, task: ser, bundle: b}]\n")
    with pytest.raises(ConfigError, match="--print-command is for engine vllm"):
        run(path, "--print-command")


def test_serve_execs_vllm_with_the_command_and_key(folder, tmp_path):
    """A stand-in ``vllm`` program records its argv and VLLM_API_KEY: what the command really execs."""
    fake = tmp_path / "bin" / "vllm"
    fake.parent.mkdir()
    record = tmp_path / "record.json"
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'key': os.environ.get('VLLM_API_KEY')}}, open({str(record)!r}, 'w'))\n"
    )
    fake.chmod(0o755)
    path = write(folder, preset="onerec-8b", executable=str(fake), tensor_parallel_size=2)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "edgewise", "cloud", "serve", "--config", str(path), "--dummy-weights"],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = json.loads(record.read_text())
    assert got["key"] == "the-clients-token"
    assert got["argv"][:2] == ["serve", "OpenOneRec/OneRec-8B"]
    argv = got["argv"]
    assert (
        argv[argv.index("--tensor-parallel-size") + 1] == "2"
        and argv[argv.index("--load-format") + 1] == "dummy"
    )
