"""Checkpoints in safetensors: tensors only, never unpickled, written atomically.

A training checkpoint stores the model under ``model.*`` and the optimizer's tensors under
``optim.<param>.<key>``; everything else (epoch, best score, optimizer hyper-parameters, RNG
seeds) goes into the safetensors metadata as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from edgewise.errors import EdgewiseError
from edgewise.fsutil import atomic_path

META_KEY = "edgewise"


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(tmp),
            metadata={META_KEY: json.dumps(meta)},
        )


def save_weights(model: torch.nn.Module, path: Path, meta: dict[str, Any] | None = None) -> Path:
    _atomic_save(dict(model.state_dict()), path, meta or {})
    return path


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    if not path.is_file():
        raise EdgewiseError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
            raw = (f.metadata() or {}).get(META_KEY, "{}")
    except Exception as exc:  # safetensors raises several types for a damaged header
        raise EdgewiseError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    return tensors, json.loads(raw)


def load_weights_into(model: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Load a weights file into ``model`` strictly; a file from another architecture is a clear error."""
    tensors, meta = load_tensors(path)
    tensors = {
        k[len("model.") :] if k.startswith("model.") else k: v
        for k, v in tensors.items()
        if not k.startswith("optim.")
    }
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            detail.append(
                f"{len(wrong)} with other shapes (e.g. {k}: file {tuple(tensors[k].shape)}, "
                f"model {tuple(own[k].shape)})"
            )
        raise EdgewiseError(f"{path}: checkpoint does not fit this architecture: {'; '.join(detail)}")
    model.load_state_dict(tensors, strict=True)
    return meta


def save_training_state(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]
) -> Path:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value if value.dim() else value.reshape(1)
    meta = {**meta, "param_groups": opt["param_groups"]}
    _atomic_save(tensors, path, meta)
    return path


def load_training_state(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    meta = load_weights_into(model, path)
    tensors, _ = load_tensors(path)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value.reshape(()) if key == "step" else value
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return meta
