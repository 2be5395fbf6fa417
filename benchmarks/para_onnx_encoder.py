"""The SER run's encoder as a user's ONNX model, for `edgewise bench para --encoders onnx:PATH`.

Exports ``encode()`` of a finished `edgewise train ser` run (log-mel in, its final-norm frames out)
with the run's log-mel normalization inside the graph, so the model takes the raw
``(batch, frames, n_mels)`` log-mel that `bench para` feeds an ONNX encoder, with dynamic batch and
time, and checks onnxruntime against PyTorch on an input of another length::

    .venv/bin/python benchmarks/para_onnx_encoder.py --run benchmarks/work/adapt/tiny-s0 \\
        --out benchmarks/work/para/tiny-s0-encoder.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from edgewise.cloud.train.run import load_run_model


class RawLogMelEncoder(torch.nn.Module):
    def __init__(self, model, mean, std) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.model.encode((logmel - self.mean) / self.std)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, info = load_run_model(args.run)
    enc = RawLogMelEncoder(model, info.features.mean, info.features.std).eval()
    n_mels = info.features.n_mels
    batch, frames = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("frames", min=16, max=5000)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(  # batch 2 in the example, or the batch axis is fixed to 1
        enc,
        (torch.randn(2, 300, n_mels),),
        str(args.out),
        dynamo=True,
        input_names=["logmel"],
        output_names=["frames"],
        dynamic_shapes=({0: batch, 1: frames},),
    )
    import onnxruntime as ort

    x = torch.randn(1, 417, n_mels)
    with torch.no_grad():
        ref = enc(x).numpy()
    out = ort.InferenceSession(str(args.out)).run(None, {"logmel": x.numpy()})[0]
    print(f"{args.out}: (1, 417, {n_mels}) -> {out.shape}, max |onnx - torch| {np.abs(out - ref).max():.2e}")


if __name__ == "__main__":
    main()
