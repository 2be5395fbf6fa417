"""``edgewise bench para``: paralinguistic tasks by acoustic encoders under one protocol (after ParaLBench).

Every encoder is frozen; its per-utterance features are cached; a small MLP head (with a learnable
softmax-weighted sum over the encoder's layers, where it has layers) is trained per task, encoder
and seed on the train split, stopped early on val and scored on test.

- :mod:`.tasks`: the task registry (emotion, gender, accent, rate, pitch) and the corpus fields
- :mod:`.encoders`: the encoder registry (logmel, ser:RUN, egemaps, compare, resemblyzer, crepe, onnx:PATH),
  with the encoders that need more than numpy in :mod:`.ser_encoder`, :mod:`.speaker_encoder`,
  :mod:`.crepe_encoder` and :mod:`.onnx_encoder`
- :mod:`.cache`: per-utterance features under ``--work``
- :mod:`.protocol`: standardization, the layer-weighted MLP head, its training
- :mod:`.metrics`: UA/WA/macro-F1 (shared with SER) and CCC/MAE
- :mod:`.report`: para_bench.json, para_bench.md, para_bench.png
- :mod:`.command`: the CLI handler
"""
