"""Copy a finished TTS or vocoder run into voices/ with fp16 weights: what the demo and tests load
instead of training for an hour. Usage: .venv/bin/python scripts/pack_voice.py RUN DEST

Keeps config.yaml, model.json, metrics.json and history.jsonl; model.safetensors is the merged model
with every float tensor in float16 (half the size; it loads into the float32 model unchanged
otherwise, and the export's parity gate compares against exactly those loaded weights)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from edgewise.cloud.train.checkpoint import load_tensors


def main(run: Path, dest: Path) -> None:
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "model.json", "metrics.json", "history.jsonl"):
        shutil.copy2(run / name, dest / name)
    tensors, meta = load_tensors(run / "model.safetensors")
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    target = dest / "model.safetensors"
    save_file(half, str(target), metadata={"edgewise": __import__("json").dumps(meta)})
    target.chmod(0o644)
    print(f"{dest}: {sum(p.stat().st_size for p in dest.iterdir()) / 2**20:.1f} MB")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
