"""``vllm serve`` for the large models: the serve config's ``vllm`` section -> the exact command.

edgewise writes the command and hands over to vLLM (its OpenAI-compatible server); it does not
run models itself. Two presets name the models devices offload to:

- ``keye-vl-8b``: Kwai-Keye/Keye-VL-8B-Preview, the vision-language model (image and video
  understanding); its model code ships with the checkpoint, so it needs ``--trust-remote-code``.
- ``onerec-8b``: OpenOneRec/OneRec-8B, the 8B generative recommender on the Qwen3 backbone (a
  Qwen3 architecture vLLM has built in: no remote code).

Flags (vLLM's ``vllm serve`` CLI, docs.vllm.ai/en/latest/cli/serve): the model is the positional
argument; ``--served-model-name`` (the id clients send), ``--tensor-parallel-size``,
``--pipeline-parallel-size``, ``--distributed-executor-backend ray`` (multi-node: a Ray cluster
made with ``ray start --head`` / ``ray start --address`` on each node before this command),
``--max-model-len``, ``--gpu-memory-utilization``, ``--dtype``, ``--load-format dummy`` (random
weights of the real architecture, nothing downloaded: for throughput runs), ``--trust-remote-code``,
``--ssl-certfile``/``--ssl-keyfile``, ``--host``/``--port``.

The API key: vLLM compares plain keys, so the clients' token is read from ``vllm.api_key_file``
(mode 0600) and given in the environment as ``VLLM_API_KEY`` (which vLLM reads like
``--api-key``), never on the command line, where ``ps`` shows it to every user.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.cloud.serve.config import ServeConfig, TLSConfig, VllmConfig
from edgewise.errors import ConfigError, MissingDependencyError

PRESETS: dict[str, dict[str, Any]] = {
    "keye-vl-8b": {
        "model": "Kwai-Keye/Keye-VL-8B-Preview",
        "served_model_name": "keye-vl-8b",
        "trust_remote_code": True,
        "dtype": "bfloat16",
        "max_model_len": 16384,
    },
    "onerec-8b": {
        "model": "OpenOneRec/OneRec-8B",
        "served_model_name": "onerec-8b",
        "trust_remote_code": False,
        "dtype": "bfloat16",
        "max_model_len": 8192,
    },
}
API_KEY_ENV = "VLLM_API_KEY"
INSTALL_HINT = (
    "vLLM runs on a GPU machine: pip install vllm there (a CUDA build), then run this command again; "
    "`edgewise cloud serve --config FILE --print-command` prints the command it would run"
)


@dataclass
class VllmLaunch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set on top of the caller's environment
    notes: list[str] = field(default_factory=list)

    def shell(self) -> str:
        """The command as one shell line (the key's value is never shown)."""
        env = " ".join(f'{k}="$(cat {v})"' for k, v in self._env_sources.items())
        return (env + " " if env else "") + shlex.join(self.argv)

    _env_sources: dict[str, str] = field(default_factory=dict, repr=False)


def resolved(v: VllmConfig) -> dict[str, Any]:
    """The section with its preset filled in (fields given in the config win)."""
    values = dict(PRESETS.get(v.preset or "", {}))
    for name in v.model_fields_set:
        values[name] = getattr(v, name)
    for name, f in VllmConfig.model_fields.items():
        values.setdefault(name, f.get_default(call_default_factory=True))
    return values


def vllm_command(config: ServeConfig, *, read_key: bool = True) -> VllmLaunch:
    """The ``vllm serve`` argv (and environment) of a serve config with ``engine: vllm``.
    ``read_key=False`` leaves the key out of ``env`` (printing the command needs no secret)."""
    if config.vllm is None:
        raise ConfigError("serve config: no vllm section (engine vllm needs a preset or a model)")
    v = resolved(config.vllm)
    argv = [v["executable"], "serve", str(v["model"]), "--host", config.host, "--port", str(config.port)]
    if v["served_model_name"]:
        argv += ["--served-model-name", v["served_model_name"]]
    argv += ["--tensor-parallel-size", str(v["tensor_parallel_size"])]
    argv += ["--pipeline-parallel-size", str(v["pipeline_parallel_size"])]
    backend = v["distributed_executor_backend"] or ("ray" if v["nodes"] > 1 else None)
    if backend:
        argv += ["--distributed-executor-backend", backend]
    for name, flag in (("max_model_len", "--max-model-len"), ("gpu_memory_utilization", "--gpu-memory-utilization"),
                       ("dtype", "--dtype"), ("load_format", "--load-format")):  # fmt: skip
        if v[name] is not None:
            argv += [flag, str(v[name])]
    if v["trust_remote_code"]:
        argv.append("--trust-remote-code")
    if isinstance(config.tls, TLSConfig):
        argv += ["--ssl-certfile", str(config.tls.cert), "--ssl-keyfile", str(config.tls.key)]
    argv += list(v["extra_args"])
    launch = VllmLaunch(argv)
    if v["api_key_file"] is not None:
        launch._env_sources[API_KEY_ENV] = str(v["api_key_file"])
        if read_key:
            from edgewise.cloud.serve.auth import read_secret

            launch.env[API_KEY_ENV] = read_secret(v["api_key_file"], "vllm.api_key_file")
    gpus = v["tensor_parallel_size"] * v["pipeline_parallel_size"]
    if v["nodes"] > 1:
        launch.notes.append(
            f"multi-node: {v['nodes']} nodes, {gpus} GPUs in all; start the Ray cluster first "
            "(`ray start --head` here, `ray start --address HEAD:6379` on each other node)"
        )
    if v["load_format"] == "dummy":
        launch.notes.append(
            "--load-format dummy: random weights (throughput and latency only, answers are noise)"
        )
    return launch


def find_vllm(executable: str) -> str:
    """The ``vllm`` program: on PATH or beside this Python; MissingDependencyError saying how to get it."""
    found = shutil.which(executable) or shutil.which(executable, path=str(Path(sys.executable).parent))
    if found is None:
        raise MissingDependencyError(
            f"vLLM is not installed here (no {executable!r} program found); {INSTALL_HINT}"
        )
    return found


def exec_vllm(launch: VllmLaunch) -> None:
    """Replace this process with vLLM (it then owns the port, the signals and the exit code)."""
    program = find_vllm(launch.argv[0])
    env = {**os.environ, **launch.env}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(program, [program, *launch.argv[1:]], env)
