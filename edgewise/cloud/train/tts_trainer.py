"""The TTS family's runs: readers of finished ``edgewise train tts`` and ``edgewise train vocoder`` runs.

Both train in the shared step loop (:mod:`edgewise.cloud.train.step_loop`).
"""

from __future__ import annotations

from pathlib import Path

from edgewise.cloud.train.step_loop import read_step_run
from edgewise.config import load_config


def load_acoustic_run(run: str | Path):
    """(merged AcousticModel in eval mode, model.json) of a finished ``edgewise train tts`` run."""
    from edgewise.cloud.models.tts.acoustic import AcousticModel
    from edgewise.cloud.models.tts.config import AcousticConfig
    from edgewise.cloud.train.checkpoint import load_weights_into

    info = read_step_run(run, "tts")
    model = AcousticModel(load_config(AcousticConfig, info["model"], name=f"{run}/model.json: model"))
    load_weights_into(model, Path(run) / "model.safetensors")
    return model.eval(), info


def load_vocoder_run(run: str | Path):
    """(merged Vocoder in eval mode, model.json) of a finished ``edgewise train vocoder`` run."""
    from edgewise.cloud.models.tts.config import VocoderConfig
    from edgewise.cloud.models.tts.vocoder import Vocoder
    from edgewise.cloud.train.checkpoint import load_weights_into

    info = read_step_run(run, "vocoder")
    model = Vocoder(load_config(VocoderConfig, info["model"], name=f"{run}/model.json: model"))
    load_weights_into(model, Path(run) / "model.safetensors")
    return model.eval(), info
