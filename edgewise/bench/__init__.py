"""``edgewise bench``: the on-device benchmark of a bundle's classifier artifacts.

One run measures, per artifact (and, with ``--run``, per PyTorch eager model): cold load in fresh
processes, warm latency percentiles, throughput by batch size, peak resident memory against a
baseline process, CPU time per second of audio and the fraction of the machine's GEMM ceiling,
which is measured in the same run (:mod:`.ceiling`). Warm latency and throughput are interleaved
round by round across the rows, so ratios hold on a noisy machine.

Modules, one job each:

* :mod:`.commands`  the CLI (``bench_add_arguments``, ``bench_run``; ``python -m edgewise.bench``);
* :mod:`.runner`    opens the bundle, plans the rows, drives the workers, computes the figures;
* :mod:`.worker`    one process per row: loads one model and times what the runner asks;
* :mod:`.ceiling`   fp32 (numpy) and int8 (onnxruntime MatMulInteger) GEMM ceilings;
* :mod:`.environment`  CPU, OS, runtime versions, load average;
* :mod:`.report`    bench.md and the PNG plots (matplotlib imported lazily, optional);
* :mod:`.remote`    the same benchmark on a device over ssh;
* :mod:`.schema`    bench.json, field by field.

Nothing here imports torch or matplotlib at module level: torch lives only in the worker processes
of the PyTorch rows, matplotlib only inside the plotting function.
"""
