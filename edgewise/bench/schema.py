"""``bench.json``: the benchmark report, validated by :class:`BenchReport` (pydantic, no torch).

Every number is in the unit its name says (``_ms``, ``_s``, ``_mb`` = MiB, ``_bytes``); a figure
that could not be measured is ``null`` and the row's ``status``/``reason``/``notes`` say why.

=========================================  ==============================================================
field                                      content
=========================================  ==============================================================
``schema``                                 ``1``
``tool``, ``edgewise_version``             ``"edgewise bench"``, the version that wrote the report
``created``                                ISO 8601 time with a zone
``command``                                the command line
``bundle``                                 ``path``, ``name``, ``version``, ``task``, ``verified`` (every
                                           artifact's size and sha256 matched), ``signature_verified``,
                                           ``error`` (why it did not verify; then ``rows`` is empty),
                                           ``parameters``, ``flops`` (the manifest's ``extra.flops`` or
                                           ``null``: "flops unknown")
``device``                                 ``name`` (profile, or ``null``), ``host`` (``user@addr:port``
                                           when run over ssh, else ``null``), ``label`` (what the report
                                           is titled with)
``emulated``                               ``null`` when measured on real hardware; on an emulated board
                                           (``edgewise board``) its note, read by the device-side bench
                                           from ``/etc/edgewise-emulated``: every timing (latency, cold
                                           load, throughput, CPU time, FLOP/s, ceiling, ratios) then
                                           says nothing about the real device's speed, and
                                           ``suggested_order`` is ``null``; memory, sizes and parity
                                           still hold
``environment``                            ``cpu_model``, ``machine``, ``cores_logical``, ``cores_usable``
                                           (affinity), ``threads`` (used by every row and the ceiling),
                                           ``os``, ``kernel``, ``python``, ``runtimes`` (package ->
                                           version or ``null``: onnxruntime, ai-edge-litert,
                                           tflite-runtime, numpy, onnx, torch), ``onnxruntime_providers``
                                           (available), ``thread_env`` (OMP_*/KMP_*/BLAS thread variables
                                           that were set), ``load_average_start`` / ``_end`` (1, 5, 15
                                           min), ``emulated`` (the same as the top-level field),
                                           ``input`` (see below)
``environment.input``                      ``kind`` (``fixed`` or ``corpus``), ``seconds`` (the fixed
                                           input, also used for throughput and cold load), ``frames``,
                                           ``n_mels``, ``utterances``, ``corpus``/``split`` (or
                                           ``null``), ``length_s`` {``min``, ``p50``, ``p90``,
                                           ``max``, ``total``} of the warm-latency inputs
``settings``                               ``runs``, ``warmup``, ``rounds``, ``batches``,
                                           ``block_seconds``, ``cold_runs``, ``seed``
``ceiling``                                ``fp32`` and ``int8``, each: ``status`` (``ok`` or
                                           ``unavailable``), ``value`` (GFLOP/s for fp32, GOP/s for int8),
                                           ``unit``, ``by_size`` {N: value} (best of ``repeats`` N x N x N
                                           GEMMs), ``by_phase`` {``start``, ``end``: value} (measured
                                           before and after the rows; ``value`` is the best), ``repeats``, ``method`` (library and data types),
                                           ``threads``, ``thread_control`` (how the thread count was set),
                                           ``reason`` (when unavailable)
``rows[]``                                 one per classifier artifact (and PyTorch model with --run):
``  .name``                                ``onnx int8 (dynamic)``, ``pytorch merged``, ...
``  .kind``                                ``artifact`` or ``pytorch``
``  .artifact``, ``.format``               bundle path (``null`` for PyTorch rows), format
``  .precision``, ``.quant``               ``fp32``/``fp16``/``int8``, ``dynamic``/``static``/``null``
``  .runtime``                             what ran it (``onnxruntime CPUExecutionProvider``,
                                           ``ai-edge-litert (100-frame window)``, ``torch 2.13.0 eager``)
``  .status``, ``.reason``                 ``ok``, ``skipped`` (cannot run here: runtime missing,
                                           no TensorRT) or ``failed`` (load or run error); ``reason``
                                           says why (``null`` when ok)
``  .parity_passed``                       the export gate's verdict (``null`` for PyTorch rows)
``  .size_bytes``                          the manifest's size (PyTorch rows: 4 bytes x parameters)
``  .parameters``                          PyTorch rows only
``  .cold``                                fresh processes: ``runs``, ``import_ms`` (the runtime
                                           module), ``load_ms`` (construct the backend),
                                           ``first_inference_ms``, ``cold_ms`` (load + first inference,
                                           median over runs), ``cold_ms_all``
``  .latency_ms``                          warm, batch 1: ``p50``, ``p90``, ``p99``, ``mean``, ``min``,
                                           ``runs``
``  .throughput[]``                        ``batch``, ``utterances_per_s`` (median over rounds),
                                           ``mode`` (``batched``, or ``sequential``: a fixed-window model
                                           runs each utterance in turn)
``  .memory``                              ``peak_rss_mb`` (VmHWM of the fresh process after loading and
                                           running at batch 1), ``baseline_rss_mb`` (a process that imports
                                           the same runtime and loads nothing), ``model_rss_mb`` (the
                                           difference), ``peak_rss_after_batches_mb`` (after the largest
                                           batch), ``source``
``  .cpu``                                 ``cpu_s_per_audio_s`` (process CPU time over the warm-latency
                                           runs / seconds of audio they processed), ``cpu_per_wall``
                                           (about the number of busy threads)
``  .flops``                               ``per_input`` (FLOPs of one fixed input), ``source``,
                                           ``achieved_gflops`` (median over warm runs of input FLOPs /
                                           latency), ``ceiling`` (``fp32`` or ``int8``),
                                           ``ceiling_value``, ``fraction_of_ceiling`` (achieved /
                                           ceiling), ``note`` (or all ``null`` with the reason in note)
``  .ratio_vs_onnx_fp32``                  warm latency / ONNX fp32's, median of per-round ratios
``  .notes``                               anything else worth knowing about the row
``suggested_order``                        the device-profile ``runtimes`` order this run measured
                                           (``null`` when nothing ran or the run was emulated): ``by`` (the measure: the
                                           per-round latency ratio vs ONNX fp32 when every row has one,
                                           else warm p50), ``runtimes[]`` (``format``, ``precision``,
                                           ``quant``, ``p50_ms``, ``ratio_vs_onnx_fp32``; fastest first;
                                           artifact rows that ran and passed their parity gate),
                                           ``left_out`` (rows not ranked, with why), ``profile`` (the
                                           ``--device`` profile or ``null``), ``profile_order`` (its
                                           measured choices in its own order), ``profile_matches``
                                           (``true`` when that order is the suggested one)
``notes``                                  report-wide notes
``plots``                                  PNG file names written beside bench.json
=========================================  ==============================================================
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from edgewise.config import StrictModel

SCHEMA = 1


class BundleInfo(StrictModel):
    path: str
    name: str | None = None
    version: str | None = None
    task: str | None = None
    verified: bool
    signature_verified: bool = False
    error: str | None = None
    parameters: int | None = None
    flops: dict[str, Any] | None = None


class DeviceInfo(StrictModel):
    name: str | None = None
    host: str | None = None
    label: str


class LengthStats(StrictModel):
    min: float
    p50: float
    p90: float
    max: float
    total: float


class InputInfo(StrictModel):
    kind: Literal["fixed", "corpus"]
    seconds: float = Field(gt=0)
    frames: int = Field(ge=1)
    n_mels: int = Field(ge=1)
    utterances: int = Field(ge=1)
    corpus: str | None = None
    split: str | None = None
    length_s: LengthStats


class Environment(StrictModel):
    cpu_model: str
    machine: str
    cores_logical: int | None
    cores_usable: int | None
    threads: int = Field(ge=1)
    os: str
    kernel: str
    python: str
    runtimes: dict[str, str | None]
    onnxruntime_providers: list[str]
    thread_env: dict[str, str] = Field(default_factory=dict)
    load_average_start: list[float] | None = None
    load_average_end: list[float] | None = None
    emulated: str | None = None
    input: InputInfo


class Settings(StrictModel):
    runs: int = Field(ge=1)
    warmup: int = Field(ge=0)
    rounds: int = Field(ge=1)
    batches: list[int]
    block_seconds: float = Field(gt=0)
    cold_runs: int = Field(ge=1)
    seed: int


class CeilingFigure(StrictModel):
    status: Literal["ok", "unavailable"]
    value: float | None = Field(default=None, gt=0)
    unit: Literal["GFLOP/s", "GOP/s"]
    by_size: dict[str, float] = Field(default_factory=dict)
    by_phase: dict[str, float] = Field(default_factory=dict)
    repeats: int | None = None
    method: str | None = None
    threads: int | None = None
    thread_control: str | None = None
    reason: str | None = None


class Ceiling(StrictModel):
    fp32: CeilingFigure
    int8: CeilingFigure
    seconds: float | None = None


class Cold(StrictModel):
    runs: int = Field(ge=1)
    import_ms: float = Field(ge=0)
    load_ms: float = Field(gt=0)
    first_inference_ms: float = Field(gt=0)
    cold_ms: float = Field(gt=0)
    cold_ms_all: list[float]


class Latency(StrictModel):
    p50: float = Field(gt=0)
    p90: float = Field(gt=0)
    p99: float = Field(gt=0)
    mean: float = Field(gt=0)
    min: float = Field(gt=0)
    runs: int = Field(ge=1)


class Throughput(StrictModel):
    batch: int = Field(ge=1)
    utterances_per_s: float = Field(gt=0)
    mode: Literal["batched", "sequential"]


class Memory(StrictModel):
    peak_rss_mb: float | None = None
    baseline_rss_mb: float | None = None
    model_rss_mb: float | None = None
    peak_rss_after_batches_mb: float | None = None
    source: str


class Cpu(StrictModel):
    cpu_s_per_audio_s: float = Field(ge=0)
    cpu_per_wall: float = Field(ge=0)


class Flops(StrictModel):
    per_input: int | None = None
    source: str | None = None
    achieved_gflops: float | None = None
    ceiling: Literal["fp32", "int8"] | None = None
    ceiling_value: float | None = None
    fraction_of_ceiling: float | None = None
    note: str | None = None


class Row(StrictModel):
    name: str
    kind: Literal["artifact", "pytorch"]
    artifact: str | None = None
    format: str
    precision: str
    quant: str | None = None
    runtime: str | None = None
    status: Literal["ok", "skipped", "failed"]
    reason: str | None = None
    parity_passed: bool | None = None
    size_bytes: int | None = None
    parameters: int | None = None
    cold: Cold | None = None
    latency_ms: Latency | None = None
    throughput: list[Throughput] = Field(default_factory=list)
    memory: Memory | None = None
    cpu: Cpu | None = None
    flops: Flops | None = None
    ratio_vs_onnx_fp32: float | None = None
    notes: list[str] = Field(default_factory=list)


class RankedRuntime(StrictModel):
    format: str
    precision: str
    quant: str | None = None
    p50_ms: float = Field(gt=0)
    ratio_vs_onnx_fp32: float | None = None


class SuggestedOrder(StrictModel):
    by: str
    runtimes: list[RankedRuntime]
    left_out: list[str] = Field(default_factory=list)
    profile: str | None = None
    profile_order: list[str] | None = None
    profile_matches: bool | None = None


class BenchReport(StrictModel):
    """bench.json: see the module docstring for every field."""

    schema_: Literal[1] = Field(default=SCHEMA, alias="schema")
    tool: Literal["edgewise bench"] = "edgewise bench"
    edgewise_version: str
    created: str
    command: str
    bundle: BundleInfo
    device: DeviceInfo
    emulated: str | None = None
    environment: Environment | None = None
    settings: Settings | None = None
    ceiling: Ceiling | None = None
    rows: list[Row] = Field(default_factory=list)
    suggested_order: SuggestedOrder | None = None
    notes: list[str] = Field(default_factory=list)
    plots: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _emulation_is_labelled_consistently(self) -> BenchReport:
        if self.environment is not None and self.environment.emulated != self.emulated:
            raise ValueError(
                f"emulated is {self.emulated!r} but environment.emulated is {self.environment.emulated!r}: "
                "a report is emulated exactly when the machine that measured it is"
            )
        if self.emulated and self.suggested_order is not None:
            raise ValueError(
                "suggested_order must be null in an emulated report: its timings are not the device's"
            )
        return self


def validate_report(data: dict[str, Any]) -> BenchReport:
    """Validate a bench.json dict; raises pydantic's ValidationError naming the field."""
    return BenchReport.model_validate(data)
