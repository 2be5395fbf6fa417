"""Pipelines the daemon runs, one per bundle task.

A pipeline is built from a bundle and a device profile (``from_bundle``), keeps its model resident,
and turns one input into one result dict (``process``). The daemon only knows this interface, so
the TTS pipeline (text in, audio out) and the recommender pipeline (history in, items out) plug in
as rows of the task registry (:data:`edgewise.tasks.TASKS`) without changes to the daemon. ``process`` must be safe to
call from several threads at once: the daemon calls it from its audio thread and its command thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from edgewise.bundle import Bundle, load_bundle
from edgewise.errors import ConfigError


class Pipeline(Protocol):
    task: str
    input_kind: str  # what process() takes: "audio" (float32 mono at 16 kHz), "text", "history" (rec)

    def process(self, item: Any) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def pipeline_for_task(task: str):
    """The pipeline class of a bundle task (from :data:`edgewise.tasks.TASKS`)."""
    from edgewise.tasks import TASKS

    if task not in TASKS:
        raise ConfigError(
            f"no edge pipeline for bundle task {task!r}; this edgewise runs: {', '.join(TASKS)}"
        )
    return TASKS[task].load("pipeline")


def open_task_bundle(
    bundle: str | Path | Bundle, task: str, needs: str, *, public_key: str | Path | None = None
) -> Bundle:
    """``bundle``, loaded (and its signature checked with ``public_key``) when given as a path; a
    ConfigError when its manifest's task is not ``task`` (``needs`` says what the pipeline runs:
    "a voice", "a recommender")."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, public_key=public_key)
    if bundle.manifest.task != task:
        raise ConfigError(
            f"{bundle.root}: a {bundle.manifest.task!r} bundle, not {needs}: this needs a {task} bundle"
        )
    return bundle
