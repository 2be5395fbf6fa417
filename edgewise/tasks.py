"""The task registry: one row per model family, read by export, the edge runtime, the daemon and bench.

A bundle's ``task`` (``ser``, ``tts``, ``rec``) names its row. Each row says, as lazy ``module:attribute``
references (so importing this module imports neither torch nor any runtime):

- ``roles``: the model roles a bundle of the task carries (the graphs the device loads);
- ``pipeline``: the edge pipeline class (``from_bundle(bundle, profile, ...)``, ``process(item)``);
- ``exporter``: the function ``edgewise export`` calls for a run of this task;
- ``input_kind``: what the pipeline takes ("audio", "text", "history"), which is also what the
  daemon's command for it carries;
- ``daemon_command``: the ``cmd`` the daemon answers with this pipeline (None: none beyond ``infer``);
- ``bench``: how ``edgewise bench`` measures a bundle of the task.

A new family adds one row and its modules, not branches through the code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edgewise.errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    roles: tuple[str, ...]
    pipeline: str
    exporter: str
    input_kind: str
    daemon_command: str | None = None
    bench: str = "edgewise.bench.runner:run_bench"

    def load(self, attribute: str) -> Any:
        module, _, name = getattr(self, attribute).partition(":")
        return getattr(importlib.import_module(module), name)


TASKS: dict[str, TaskSpec] = {
    "ser": TaskSpec(
        name="ser",
        description="speech emotion recognition: audio in, an emotion label out",
        roles=("classifier",),
        pipeline="edgewise.edge.pipelines.ser:SERPipeline",
        exporter="edgewise.export.commands:export_ser",
        input_kind="audio",
        daemon_command="infer",
    ),
    "tts": TaskSpec(
        name="tts",
        description="text to speech: text in, 22.05 kHz audio out, streamed",
        roles=("tts_encoder", "tts_flow", "vocoder"),
        pipeline="edgewise.edge.pipelines.tts:TTSPipeline",
        exporter="edgewise.export.commands:export_tts",
        input_kind="text",
        daemon_command="tts",
        bench="edgewise.bench.tts:bench_bundle",
    ),
    "rec": TaskSpec(
        name="rec",
        description="generative recommendation: a history of item ids in, the next items out",
        roles=("rec_context", "rec_decoder"),
        pipeline="edgewise.edge.pipelines.rec:RecPipeline",
        exporter="edgewise.export.commands:export_rec",
        input_kind="history",
        daemon_command="recommend",
        bench="edgewise.bench.rec:bench_bundle",
    ),
}


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; this edgewise knows: {', '.join(TASKS)}")
    return TASKS[name]


def task_of_run(run_dir: Any) -> str:
    """The task a training run's ``model.json`` records (runs from before the field: ``ser``)."""
    import json
    from pathlib import Path

    path = Path(run_dir) / "model.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return "ser"  # the SER reader gives the precise error for a missing or broken run
    task = data.get("task", "ser") if isinstance(data, dict) else "ser"
    if task == "vocoder":
        raise ConfigError(
            f"{run_dir}: a vocoder run is exported with its acoustic run: "
            "edgewise export ACOUSTIC_RUN --vocoder VOCODER_RUN --out DIR"
        )
    return task
