"""``edgewise export tts``: an acoustic run and a vocoder run in, a verified ``tts`` bundle out.

    read both runs -> three graphs (ONNX fp32 with dynamic lengths; int8 = dynamic quantization of
      the INT8_ROLES graphs: the int8 voice runs the encoder's fp32 graph)
      tts_encoder   ids, boundary, last_word -> mu (per-id normalised mel mean), logd (log(1 + frames))
      tts_flow      x, mu, t -> v             (one Euler step; the ODE loop runs in the runtime)
      vocoder       mel -> log_mag, phase     (the inverse FFT runs in numpy on the device)
    -> per-graph parity against PyTorch on validation sentences (max |diff| of every output); a
       graph out of tolerance stops the export here (the end-to-end check could not save it)
    -> end to end, per precision: the device pipeline (:class:`edgewise.edge.pipelines.tts.TTSPipeline`)
       against PyTorch with the same noise: mel error, waveform log-mel error, and the word error
       rate of the offline recognizer (pocketsphinx), which may not be worse than PyTorch's by more
       than ``max_wer_increase`` (1 point)
    -> gate: every artifact and precision within tolerance, or nothing is written (unless --no-gate)
    -> BundleWriter: task "tts", preprocessing.tts (mel, stats, phoneme table, phonemizer, steps), signature

TFLite (``--format tflite``): litert-torch cannot convert the flow step or the vocoder with a
dynamic frame axis (the decoder pads to a multiple of its attention window from the input length),
so both are converted at a fixed length, :func:`~edgewise.edge.pipelines.tts.fixed_graph_frames`
frames, with one more input, ``mask`` (1 for real frames), that every convolution and attention
window honours: a call padded to that length gives its real frames what the dynamic graph gives
(:class:`edgewise.edge.backends.LiteRTGraph` pads, masks, and tiles longer calls). int8 is
ai-edge-quantizer's dynamic recipe. The encoder stays ONNX in the TFLite voice (TFLITE_ROLES):
it runs once per sentence on int64 ids of any count. Each TFLite voice goes through the same
per-graph, reference-set and end-to-end WER gate as the ONNX ones.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgewise.bundle import BundleWriter, sha256_file
from edgewise.edge.pipelines.tts import ROLES
from edgewise.export.errors import ExportError, ParityError
from edgewise.export.formats import FORMATS as TABLE
from edgewise.export.pipeline import _check_sign_key, _versions, step
from edgewise.export.reference import CIRCULAR_OUTPUTS, attach_graph_references

if TYPE_CHECKING:
    from edgewise.cloud.models.tts.speak import Sentence

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
FORMATS = ("onnx", "tflite")  # rows of the format table this family exports (edgewise.export.formats)
TFLITE_ROLES = ("tts_flow", "vocoder")  # converted at a fixed length; the TFLite voice's encoder is ONNX
# max |diff| of each graph's outputs against PyTorch, per precision (outputs are normalised mel
# units, log(1 + frames), and log-magnitude); int8 is bounded end to end by the WER gate instead
GRAPH_ATOL = {"fp32": 1e-3, "int8": None}
E2E_MEL_ATOL = {"fp32": 0.05, "int8": None}  # mean |diff| of the normalised mel, same noise and durations
# The graphs the int8 voice quantizes; the others stay fp32 in it. The encoder sets the durations
# (frames per phoneme, rounded): int8 moved them in 80 of 100 validation sentences of joe-tiny and
# cost the voice 1.6 WER points, over the gate; it runs once per sentence, so fp32 costs little.
INT8_ROLES = ("tts_flow", "vocoder")
MAX_WER_INCREASE = 0.01


@dataclass
class TTSExportOptions:
    out: Path
    vocoder: Path
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    formats: list[str] = field(default_factory=lambda: ["onnx"])
    name: str | None = None
    version: str = "1.0.0"
    data: Path | None = None
    sign_key: Path | None = None
    gate: bool = True
    wer_sentences: int = 100
    max_wer_increase: float = MAX_WER_INCREASE
    int8_roles: tuple[str, ...] = INT8_ROLES
    threads: int = 2
    overwrite: bool = False


# -- graphs -----------------------------------------------------------------------------------


def graphs(acoustic: Any, vocoder: Any) -> dict[str, Any]:
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, boundary, last_word):
            return self.m.encode(ids, torch.ones_like(boundary), boundary, last_word)

    class FlowStep(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, mu, t):
            return self.m.decoder(x, mu, t, torch.ones_like(x[..., 0]))

    return {
        "tts_encoder": Encoder(acoustic).eval(),
        "tts_flow": FlowStep(acoustic).eval(),
        "vocoder": vocoder.eval(),
    }


def fixed_graphs(acoustic: Any, vocoder: Any) -> dict[str, Any]:
    """The TFLite forms of the flow step and the vocoder: the same modules with a frame ``mask``
    input last (padding past the real frames changes nothing in them)."""
    from torch import nn

    class FlowStep(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, mu, t, mask):
            return self.m.decoder(x, mu, t, mask)

    class Vocoder(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, mel, mask):
            return self.m(mel, mask)

    return {"tts_flow": FlowStep(acoustic).eval(), "vocoder": Vocoder(vocoder).eval()}


def fixed_graph_spec(
    role: str, frames: int, window: int, vocoder_context: int, n_mels: int
) -> dict[str, Any]:
    """A TFLite graph's ``extra.graph`` (what :class:`~edgewise.edge.backends.LiteRTGraph` takes):
    the flow's tiles keep its attention windows aligned; the vocoder's context is its receptive field."""
    inputs, outputs = graph_io(role, n_mels, 1)
    flow = role == "tts_flow"
    return {
        "inputs": [i["name"] for i in inputs] + ["mask"],
        "outputs": [o["name"] for o in outputs],
        "frames": frames,
        "mask_input": "mask",
        "context": window if flow else vocoder_context,
        "align": window if flow else 1,
    }


def export_tflite(
    modules: dict[str, Any],
    roles: tuple[str, ...],
    spec: dict[str, dict[str, Any]],
    n_mels: int,
    workdir: Path,
    int8_roles: tuple[str, ...],
    precisions: list[str],
) -> tuple[dict[str, dict[str, Path]], dict[str, dict[str, str]]]:
    """(precision -> role -> .tflite file, role -> the int8 graph's quantizer details): fp32 by
    litert-torch at the fixed length, int8 dynamic from it (the ``int8_roles`` graphs)."""
    import torch

    from edgewise.export.tflite_export import convert, quantize_dynamic

    out: dict[str, dict[str, Path]] = {"fp32": {}, "int8": {}}
    quant: dict[str, dict[str, str]] = {}  # role -> the int8 graph's quantizer details (its extra)
    for role in roles:
        frames = spec[role]["frames"]
        example = (
            (
                torch.zeros(1, frames, n_mels),
                torch.zeros(1, frames, n_mels),
                torch.full((1,), 0.5),
                torch.ones(1, frames),
            )
            if role == "tts_flow"
            else (torch.zeros(1, frames, n_mels), torch.ones(1, frames))
        )
        with step(f"export {role} tflite fp32 ({frames} frames, masked)"):
            out["fp32"][role] = convert(modules[role], example, workdir / f"{role}.fp32.tflite")
        if "int8" in precisions and role in int8_roles:
            with step(f"quantize {role} tflite int8 (dynamic)"):
                out["int8"][role] = workdir / f"{role}.int8-dynamic.tflite"
                quant[role] = quantize_dynamic(out["fp32"][role], out["int8"][role])
    return out, quant


def graph_io(role: str, n_mels: int, n_bins: int) -> tuple[list[dict], list[dict]]:
    f32 = "float32"
    if role == "tts_encoder":
        return (
            [{"name": "ids", "shape": [1, "ids"], "dtype": "int64"},
             {"name": "boundary", "shape": [1, "ids"], "dtype": f32},
             {"name": "last_word", "shape": [1, "ids"], "dtype": f32}],
            [{"name": "mu", "shape": [1, "ids", n_mels], "dtype": f32},
             {"name": "logd", "shape": [1, "ids"], "dtype": f32}],
        )  # fmt: skip
    if role == "tts_flow":
        return (
            [{"name": "x", "shape": [1, "frames", n_mels], "dtype": f32},
             {"name": "mu", "shape": [1, "frames", n_mels], "dtype": f32},
             {"name": "t", "shape": [1], "dtype": f32}],
            [{"name": "v", "shape": [1, "frames", n_mels], "dtype": f32}],
        )  # fmt: skip
    return (
        [{"name": "mel", "shape": [1, "frames", n_mels], "dtype": f32}],
        [{"name": "log_mag", "shape": [1, "frames", n_bins], "dtype": f32},
         {"name": "phase", "shape": [1, "frames", n_bins], "dtype": f32}],
    )  # fmt: skip


def export_graphs(modules: dict[str, Any], n_mels: int, workdir: Path) -> dict[str, Path]:
    import torch

    from edgewise.export.onnx_export import export_role_graphs

    n = torch.export.Dim("ids", min=4, max=4096)
    # AUTO: the decoder pads to a multiple of its attention window, a constraint a named Dim's
    # bounds cannot express (torch.export reports an inconsistent range); AUTO infers it
    t = torch.export.Dim.AUTO
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 100, (1, 40), generator=g)
    boundary = (torch.rand(1, 40, generator=g) > 0.8).float()
    examples = {
        "tts_encoder": ((ids, boundary, torch.zeros(1, 40)), ({1: n}, {1: n}, {1: n})),
        "tts_flow": ((torch.randn(1, 70, n_mels, generator=g), torch.randn(1, 70, n_mels, generator=g),
                      torch.full((1,), 0.5)), ({1: t}, {1: t}, None)),
        "vocoder": ((torch.randn(1, 70, n_mels, generator=g),), ({1: t},)),
    }  # fmt: skip
    io = {role: graph_io(role, n_mels, 1) for role in modules}
    return export_role_graphs(modules, examples, io, workdir)


# -- checks -----------------------------------------------------------------------------------


def graph_parity(
    modules, files: dict[str, Path], sentences: list[Sentence], open_graph: Any, n_mels: int
) -> dict[str, float]:
    """max |diff| of every output of each graph file against its PyTorch module, on validation
    inputs; ``open_graph(role, path)`` loads a file the way the device does."""
    import torch

    from edgewise.edge.reference import output_diff

    result = {}
    g = torch.Generator().manual_seed(1)
    for role, path in files.items():
        backend = open_graph(role, path)
        worst = 0.0
        for s in sentences[:6]:
            if role == "tts_encoder":
                args = (
                    torch.from_numpy(s.ids[None]),
                    torch.from_numpy(s.boundary[None]),
                    torch.from_numpy(s.last[None]),
                )
            else:
                frames = 4 * len(s.ids) // 3 + 5
                # a fixed-length graph: one call's worth (longer calls are tiled, which is the
                # pipeline's chunking for the flow, not a property of the graph)
                frames = min(frames, getattr(backend, "frames", frames))
                mel = torch.randn(1, frames, n_mels, generator=g)
                args = (
                    (mel, torch.randn(1, frames, n_mels, generator=g), torch.rand(1, generator=g))
                    if role == "tts_flow"
                    else (mel,)
                )
            with torch.no_grad():
                expected = modules[role](*args)
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = backend.run({name: a.numpy() for name, a in zip(backend.input_names, args)})
            for name, e, o in zip(backend.output_names, expected, got):
                compare = "circular" if name in CIRCULAR_OUTPUTS else "abs"  # the phase: on the circle
                worst = max(worst, output_diff(o, e.numpy(), compare))
        result[role] = worst
    return result


# -- export -----------------------------------------------------------------------------------


def export_tts(acoustic_run: str | Path, opts: TTSExportOptions) -> dict[str, Any]:
    import torch

    from edgewise.cloud.data.tts_corpus import load_tts_corpus
    from edgewise.cloud.models.tts.speak import corpus_sentences, speak
    from edgewise.cloud.train.tts_trainer import load_acoustic_run, load_vocoder_run
    from edgewise.edge.backends import LiteRTGraph, OnnxBackend
    from edgewise.edge.pipelines.tts import (
        TTSPipeline,
        TTSSettings,
        fixed_graph_frames,
        open_phonemizer,
        voice_key,
        voice_sources,
    )
    from edgewise.export.onnx_export import quantize_int8_dynamic
    from edgewise.export.tflite_export import converter_name
    from edgewise.phonemes import PhonemeIds
    from edgewise.textnorm import word_error_rate
    from edgewise.tts_dsp import MelSpec, tts_log_mel
    from edgewise.tts_eval import recognizer, transcribe

    opts = replace(opts, precisions=list(dict.fromkeys(opts.precisions)))  # a precision given twice: once
    bad = sorted(set(opts.precisions) - set(PRECISIONS))
    if bad:
        raise ExportError(
            f"tts export: precision(s) {bad} not supported; choose from {', '.join(PRECISIONS)}"
        )
    opts = replace(opts, formats=list(dict.fromkeys(opts.formats)))
    for fmt in opts.formats:
        if fmt not in FORMATS:
            raise ExportError(
                f"tts export: format {fmt!r} is not exported for voices; choose from {', '.join(FORMATS)}"
                + (" (TensorRT: build engines from the ONNX graphs on the device)" if fmt in TABLE else "")
            )
        TABLE[fmt].requires()  # the toolchain, before any slow work (MissingDependencyError)
    unknown = sorted(set(opts.int8_roles) - set(ROLES))
    if unknown or not opts.int8_roles:
        raise ExportError(
            f"tts export: int8 graphs {list(opts.int8_roles)}: expected one or more of {', '.join(ROLES)}"
        )
    if opts.sign_key is not None:
        _check_sign_key(opts.sign_key)
    torch.set_num_threads(max(1, opts.threads))
    with step("read runs"):
        acoustic, info = load_acoustic_run(acoustic_run)
        vocoder, vinfo = load_vocoder_run(opts.vocoder)
        corpus = _corpus(load_tts_corpus, opts.data, info)
    mean, std = np.asarray(info["mel_mean"], np.float32), np.asarray(info["mel_std"], np.float32)
    mel_spec = MelSpec(**info["mel"])
    if MelSpec(**vinfo["mel"]) != mel_spec:
        raise ExportError(
            f"the vocoder's mel ({vinfo['mel']}) differs from the acoustic model's ({info['mel']})"
        )
    table = PhonemeIds(info["phoneme_id_map"])
    if corpus.id_map != info["phoneme_id_map"]:
        raise ExportError(
            f"{corpus.root}: the corpus's phoneme table differs from the one the acoustic run was "
            "trained with; give the corpus it was trained on with --data DIR"
        )
    cfg = acoustic.config
    preprocessing = {
        "tts": {
            "mel": mel_spec.to_dict(),
            "mel_mean": [round(float(x), 6) for x in mean],
            "mel_std": [round(float(x), 6) for x in std],
            "phoneme_id_map": info["phoneme_id_map"],
            "phonemizer": info["phonemizer"],
            "steps": cfg.flow.steps,
            "temperature": cfg.flow.temperature,
            "decoder_window": cfg.decoder.window,
            "vocoder_context": vinfo["receptive_field"],
        }
    }
    settings = TTSSettings.from_manifest(preprocessing, "preprocessing")
    sentences = corpus_sentences(corpus, "val", opts.wer_sentences)
    name = opts.name or str(info.get("name") or "tts")
    writer = BundleWriter(
        opts.out, name=name, version=opts.version, task="tts", preprocessing=preprocessing,
        provenance={
            "acoustic_run": str(Path(acoustic_run).resolve()), "vocoder_run": str(Path(opts.vocoder).resolve()),
            "acoustic_sha256": sha256_file(Path(acoustic_run) / "model.safetensors"),
            "vocoder_sha256": sha256_file(Path(opts.vocoder) / "model.safetensors"),
            "corpus": str(corpus.root), "teacher": info.get("teacher"),
            "training": {"acoustic": info.get("provenance"), "vocoder": vinfo.get("provenance")},
            "trained_with": {"acoustic": info.get("trained_with"), "vocoder": vinfo.get("trained_with")},
            "parity_gate": "enforced" if opts.gate else "off (--no-gate)", "versions": _versions(),
        },
        overwrite=opts.overwrite,
    )  # fmt: skip
    modules = graphs(acoustic, vocoder)
    n_frames = fixed_graph_frames(cfg.decoder.window, vinfo["receptive_field"])
    specs = {
        role: fixed_graph_spec(role, n_frames, cfg.decoder.window, vinfo["receptive_field"], cfg.n_mels)
        for role in TFLITE_ROLES
    }
    threads = opts.threads

    def open_graph(role: str, path: Path) -> Any:  # as the device opens it (edge.runtime.open_backend)
        if path.suffix == ".tflite":
            int8 = ".int8" in path.name
            quant = {"precision": "int8", "quant": "dynamic"} if int8 else {}
            return LiteRTGraph(path, threads, **specs[role], **quant)
        return OnnxBackend(path, threads, single_io=False)

    # the voices: one per format and precision, keyed "fp32", "int8" (ONNX), "tflite-fp32", ...
    voices = [(fmt, p) for fmt in opts.formats for p in opts.precisions]
    report: dict[str, Any] = {"graphs": {}, "end_to_end": {}}
    failures: list[str] = []
    with writer, tempfile.TemporaryDirectory(prefix="edgewise-tts-export-") as tmp:
        files = {"fp32": export_graphs(modules, cfg.n_mels, Path(tmp))}
        if "int8" in opts.precisions and "onnx" in opts.formats:  # the TFLite voices run no ONNX int8
            files["int8"], quant = {}, {}
            for role, src in files["fp32"].items():
                if role not in opts.int8_roles:
                    continue
                with step(f"quantize {role} onnx int8 (dynamic)"):
                    files["int8"][role] = Path(tmp) / f"{role}.int8-dynamic.onnx"
                    quant[role] = quantize_int8_dynamic(src, files["int8"][role])
        if "tflite" in opts.formats:
            tfl, tfl_quant = export_tflite(
                fixed_graphs(acoustic, vocoder), TFLITE_ROLES, specs, cfg.n_mels, Path(tmp),
                opts.int8_roles, opts.precisions,
            )  # fmt: skip
            for precision, by_role in tfl.items():
                if by_role:
                    files[voice_key("tflite", precision)] = by_role
        # every file some voice runs ships and is checked (an int8-only export still ships the
        # fp32 encoder its voice runs)
        shipped: dict[str, dict[str, Path]] = {}
        for fmt, precision in voices:
            for role, key in voice_keys(files, voice_key(fmt, precision)).items():
                shipped.setdefault(key, {})[role] = files[key][role]
        for key, by_role in shipped.items():  # each graph first: a failure here ends the export early
            precision = voice_sources(key)[0][1]
            with step(f"parity {key} (each graph)"):
                diffs = graph_parity(modules, by_role, sentences, open_graph, cfg.n_mels)
            report["graphs"][key] = {r: round(d, 6) for r, d in diffs.items()}
            atol = GRAPH_ATOL[precision]
            for role, d in diffs.items():
                if atol is not None and d > atol:
                    failures.append(f"{role} {key}: max |diff| {d:.3g} > {atol:g}")
        with step("reference sets for the device's parity check"):
            device_refs = attach_graph_references(
                modules, shipped, sentences, Path(tmp), mel_mean=mean, mel_std=std,
                window=cfg.decoder.window, atol={k: GRAPH_ATOL[voice_sources(k)[0][1]] for k in shipped},
                open_graph=open_graph,
            )  # fmt: skip
        report["device_reference"] = device_refs.report()
        failures += device_refs.failures
        if failures and opts.gate:
            _refuse(report, failures, "end to end not checked")
        with step("reference (PyTorch on the validation sentences)"):
            rng = np.random.default_rng(0)
            noises = [
                rng.standard_normal((_frames(acoustic, s) + 256, cfg.n_mels)).astype(np.float32)
                for s in sentences
            ]
            asr = recognizer()  # MissingDependencyError (exit 2) without pocketsphinx
            ref = [
                speak(acoustic, vocoder, s, n * cfg.flow.temperature, mean, std, cfg.flow.steps)
                for s, n in zip(sentences, noises)
            ]
            texts = [s.text for s in sentences]
            wer_torch = word_error_rate(texts, [transcribe(asr, a, mel_spec.sample_rate) for _, a in ref])
        report["wer_pytorch"] = round(wer_torch, 4)
        log.info("reference: %d validation sentences, PyTorch WER %.3f", len(sentences), wer_torch)
        phonemizer = open_phonemizer(settings.phonemizer, settings.voice)
        for fmt, precision in voices:
            key = voice_key(fmt, precision)
            voice = voice_keys(files, key)
            with step(f"parity {key} (end to end, {len(sentences)} sentences)"):
                backends = {r: open_graph(r, files[k][r]) for r, k in voice.items()}
                pipe = TTSPipeline(backends, settings, phonemizer)
                mel_err, wav_err, hyps = [], [], []
                for s, noise, (ref_mel, ref_audio) in zip(sentences, noises, ref):
                    mu, _ = pipe.encode(table.symbols(s.ids))
                    noise = _fit(noise, mu.shape[0])
                    x = pipe.decode(noise[: mu.shape[0]] * cfg.flow.temperature, mu, cfg.flow.steps)
                    if x.shape == ref_mel.shape:
                        mel_err.append(float(np.abs(x - ref_mel).mean()))
                    audio = np.concatenate(
                        list(
                            pipe._speak(
                                mu, noise[: mu.shape[0]] * cfg.flow.temperature, cfg.flow.steps, {}, True
                            )
                        )
                    )
                    hyps.append(transcribe(asr, audio, mel_spec.sample_rate))
                    n = min(len(audio), len(ref_audio))
                    if n >= mel_spec.hop * 4:
                        wav_err.append(
                            float(
                                np.abs(
                                    tts_log_mel(audio[:n], mel_spec) - tts_log_mel(ref_audio[:n], mel_spec)
                                ).mean()
                            )
                        )
                wer = word_error_rate(texts, hyps)
            e2e = {
                "sentences": len(sentences),
                "same_durations": len(mel_err),
                "mel_mean_abs_diff": round(float(np.mean(mel_err)), 5) if mel_err else None,
                "waveform_log_mel_mean_abs_diff": round(float(np.mean(wav_err)), 5) if wav_err else None,
                "wer": round(wer, 4),
                "wer_increase": round(wer - wer_torch, 4),
                "graphs": {r: " ".join(voice_sources(voice[r])[0]) for r in ROLES},  # "onnx fp32"
            }
            report["end_to_end"][key] = e2e
            if wer - wer_torch > opts.max_wer_increase:
                failures.append(
                    f"{key}: WER {wer:.3f} vs PyTorch {wer_torch:.3f} (more than {opts.max_wer_increase:.2f} worse)"
                )
            mel_atol = E2E_MEL_ATOL[precision]
            if (
                mel_atol is not None
                and e2e["mel_mean_abs_diff"] is not None
                and e2e["mel_mean_abs_diff"] > mel_atol
            ):
                failures.append(f"{key}: mel mean |diff| {e2e['mel_mean_abs_diff']} > {mel_atol}")
            log.info("%s end to end: %s", key, e2e)
        if failures and opts.gate:
            _refuse(report, failures)
        n_bins = mel_spec.n_fft // 2 + 1
        params = {"tts_encoder": None, "tts_flow": None, "vocoder": vinfo.get("parameters")}
        for role in ROLES:
            inputs, outputs = graph_io(role, cfg.n_mels, n_bins)
            writer.add_model(
                role,
                inputs=inputs,
                outputs=outputs,
                extra={"parameters": params[role]} if params[role] else None,
            )
            for key, by_role in shipped.items():
                if role not in by_role:
                    continue  # the voices run the role's graph of another format or precision
                fmt, precision = voice_sources(key)[0]
                row = TABLE[fmt]
                stem = "fp32" if precision == "fp32" else "int8-dynamic"
                passed = not any(f.startswith((f"{role} {key}", f"{key}:")) for f in failures)
                extra: dict[str, Any] = {"reference": device_refs.extra[role][key]}
                if precision == "int8":
                    extra["quant"] = "dynamic"
                fixed_shape = None
                if fmt == "tflite":
                    spec = specs[role]
                    extra.update(graph=spec, converter=converter_name())
                    if precision == "int8":
                        extra.update(tfl_quant[role])
                    # the role's frame inputs; the mask is the artifact's own (extra.graph)
                    fixed_shape = {
                        i["name"]: [1, spec["frames"], cfg.n_mels] for i in inputs if "frames" in i["shape"]
                    }
                writer.add_artifact(
                    role, by_role[role], f"models/{role}.{stem}{row.suffix}",
                    format=row.manifest_format, precision=precision, runtime=row.runtime,
                    fixed_shape=fixed_shape,
                    parity={"checked": True, "passed": passed, "max_abs_diff": report["graphs"][key][role],
                            **({"end_to_end": report["end_to_end"][key]} if key in report["end_to_end"] else {})},
                    extra=extra,
                )  # fmt: skip
        device_refs.add_to(writer)  # bound by the sha256 in each artifact's extra.reference
        with step("write bundle"):
            bundle = writer.finish(sign_key=opts.sign_key)
    report["bundle"] = str(bundle)
    report["failures"] = failures
    return report


def voice_keys(files: dict[str, dict[str, Path]], voice: str) -> dict[str, str]:
    """role -> the voice key whose exported file the voice runs for it (``files``: voice key ->
    role -> file), picked the way the device picks artifacts
    (:func:`~edgewise.edge.pipelines.tts.voice_sources`)."""
    from edgewise.edge.pipelines.tts import voice_key, voice_sources

    keys = [voice_key(f, p) for f, p in voice_sources(voice)]
    return {role: next(k for k in keys if role in files.get(k, {})) for role in ROLES}


def _corpus(load: Any, data: Path | None, info: dict[str, Any]) -> Any:
    """The corpus given with --data, else the one the acoustic run was trained on."""
    from edgewise.errors import DataError

    if data is not None:
        return load(data)
    recorded = (info.get("provenance") or {}).get("corpus")
    if not recorded:
        raise ExportError("the acoustic run does not record its corpus: give it with --data DIR")
    try:
        return load(recorded)
    except DataError as exc:
        raise DataError(
            f"{exc} (the corpus the acoustic run was trained on; give it with --data DIR)"
        ) from None


def _refuse(report: dict[str, Any], failures: list[str], note: str | None = None) -> None:
    """The gate's verdict: the report so far, then one line naming every failure."""
    text = json.dumps(report, indent=2)
    extra = f" ({note})" if note else ""
    raise ParityError(
        f"{text}\nexport refused: {'; '.join(failures)}{extra}; no bundle was written (--no-gate writes it)"
    )


def _fit(noise: np.ndarray, frames: int) -> np.ndarray:
    """The reference's noise, extended when the device's durations come out longer than PyTorch's
    by more than the 256 spare frames (int8 may; the extra frames have no reference to match)."""
    if noise.shape[0] >= frames:
        return noise
    extra = np.random.default_rng(frames).standard_normal((frames - noise.shape[0], noise.shape[1]))
    return np.concatenate([noise, extra.astype(np.float32)])


def _frames(acoustic: Any, s: Sentence) -> int:
    """Frames PyTorch's duration predictor gives the sentence (to size its noise)."""
    import torch

    from edgewise.cloud.models.tts.acoustic import durations_from_log

    with torch.inference_mode():
        mask = torch.ones(1, len(s.ids))
        _, logd = acoustic.encode(
            torch.from_numpy(s.ids[None]),
            mask,
            torch.from_numpy(s.boundary[None]),
            torch.from_numpy(s.last[None]),
        )
    return int(durations_from_log(logd, mask).sum())
