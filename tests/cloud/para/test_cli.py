"""`edgewise bench para` end to end: the three report files, the feature cache, one clear line for
every bad input, and `edgewise bench BUNDLE` parsed exactly as before."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgewise.cli import _join_command_words, build_parser, main
from tests.cloud.para.conftest import make_onnx_encoder, make_para_corpus
from tests.conftest import require_module


def _parse(argv):
    return build_parser().parse_args(_join_command_words(argv))


# --- dispatch ------------------------------------------------------------------------------------------


def test_bench_bundle_is_parsed_as_before():
    args = _parse(["bench", "ser-tiny-1.0.0/", "--out", "b/", "--runs", "5", "--formats", "onnx"])
    assert args._handler == ("edgewise.bench.commands", "bench_run")
    assert args.bundle == Path("ser-tiny-1.0.0/") and args.out == Path("b/")
    assert args.runs == 5 and args.formats == ["onnx"]
    late = _parse(["-q", "bench", "--out", "b/", "para"])  # `para` after a flag is a bundle, as before
    assert late._handler == ("edgewise.bench.commands", "bench_run") and late.bundle == Path("para")


def test_bench_para_has_its_own_parser():
    args = _parse(["-v", "bench", "para", "--data", "c/", "--out", "o/", "--tasks", "rate", "--seeds", "4"])
    assert args._handler == ("edgewise.cloud.para.command", "bench_para_run")
    assert args.data == Path("c/") and args.tasks == ["rate"] and args.seeds == [4] and args.verbose == 1


def test_bench_help_mentions_bench_para(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "edgewise bench para --help" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "para", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: edgewise bench para") and "onnx:PATH" in out and "pitch" in out


# --- end to end ----------------------------------------------------------------------------------------


def test_writes_json_markdown_and_heat_map_then_reuses_the_features(para_corpus, tmp_path, capsys):
    require_module("torch")
    require_module("opensmile")
    out = tmp_path / "report"
    argv = ["bench", "para", "--data", str(para_corpus), "--encoders", "logmel,egemaps", "--seeds", "0"]
    assert main([*argv, "--out", str(out), "--max-epochs", "15", "--workers", "1"]) == 0
    report = json.loads((out / "para_bench.json").read_text())
    tasks = ["emotion", "gender", "accent", "rate", "pitch"]
    assert list(report["tasks"]) == tasks and list(report["encoders"]) == ["logmel", "egemaps"]
    assert len(report["results"]) == 10  # tasks x encoders x seeds
    assert report["command"].startswith("edgewise bench para --data ")
    for task in tasks:
        metric = report["tasks"][task]["primary"]
        assert metric == ("ccc" if task in ("rate", "pitch") else "ua")
        for enc in ("logmel", "egemaps"):
            assert report["summary"][task][enc][metric]["n"] == 1
    assert (
        report["encoders"]["egemaps"]["dims"] == 88
        and report["encoders"]["logmel"]["timing"]["encoded"] == 48
    )
    markdown = (out / "para_bench.md").read_text()
    assert "| task (metric) | logmel | egemaps |" in markdown
    for row in (
        "| emotion (UA, chance 0.25) |",
        "| accent (UA, chance 0.50) |",
        "| rate (CCC) |",
        "| pitch (CCC) |",
    ):
        assert row in markdown
    assert (out / "para_bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report: " in capsys.readouterr().out

    again = tmp_path / "again"  # other tasks, the same work folder: nothing is encoded again
    argv = [
        "bench",
        "para",
        "--data",
        str(para_corpus),
        "--tasks",
        "rate",
        "--encoders",
        "logmel",
        "--seeds",
        "1",
    ]
    assert main([*argv, "--out", str(again), "--work", str(out / "work"), "--no-plot"]) == 0
    second = json.loads((again / "para_bench.json").read_text())
    assert second["encoders"]["logmel"]["timing"] | {"cache": None} == {
        "encode_s": 0.0,
        "encoded": 0,
        "cached": 48,
        "s_per_utterance": None,
        "cache": None,
    }
    assert list(second["tasks"]) == ["rate"] and not (again / "para_bench.png").exists()


# --- bad input: one line, exit 2, nothing encoded --------------------------------------------------------


def _fails(argv, capsys, tmp_path) -> str:
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgewise: error: ") and "\n" not in err and "Traceback" not in err
    assert not (out / "work" / "features").exists()
    return err.removeprefix("edgewise: error: ")


def test_unknown_task_and_encoder(para_corpus, tmp_path, capsys):
    data = ["bench", "para", "--data", str(para_corpus)]
    assert _fails([*data, "--tasks", "emotion,loudness"], capsys, tmp_path) == (
        "--tasks: unknown task(s) loudness; valid tasks: emotion, gender, accent, rate, pitch, disambig"
    )
    assert _fails([*data, "--encoders", "logmel,hubert"], capsys, tmp_path) == (
        "--encoders: unknown encoder 'hubert'; valid encoders: logmel, ser:RUN, egemaps, compare, "
        "resemblyzer, crepe, onnx:PATH"
    )


def test_missing_corpus_field(tmp_path, capsys):
    corpus = make_para_corpus(tmp_path / "no-rate", per_class=1, columns=("voice", "gender"))
    argv = ["bench", "para", "--data", str(corpus), "--tasks", "emotion,rate", "--encoders", "logmel"]
    assert _fails(argv, capsys, tmp_path) == (
        f"task 'rate' needs the corpus field 'rate', which the edgewise corpus {corpus.resolve()} does not have"
    )


def test_ser_without_a_valid_run(para_corpus, tmp_path, capsys):
    require_module("torch")
    argv = ["bench", "para", "--data", str(para_corpus), "--encoders", f"logmel,ser:{tmp_path / 'nope'}"]
    message = _fails(argv, capsys, tmp_path)
    assert (
        message
        == f"encoder ser:{tmp_path / 'nope'}: no such run folder (a finished `edgewise train ser` run)"
    )


def test_onnx_missing_file_and_wrong_input_shape(para_corpus, tmp_path, capsys):
    require_module("onnxruntime")
    data = ["bench", "para", "--data", str(para_corpus), "--encoders"]
    missing = tmp_path / "missing.onnx"
    assert (
        _fails([*data, f"logmel,onnx:{missing}"], capsys, tmp_path)
        == f"encoder onnx:{missing}: file not found"
    )
    image = make_onnx_encoder(tmp_path / "image.onnx", [1, 3, 224, 224])
    assert _fails([*data, f"logmel,onnx:{image}"], capsys, tmp_path) == (
        f"encoder onnx:{image}: expected (batch, samples) 16 kHz audio or (batch, frames, n_mels) log-mel; "
        "input 'x' has shape (1, 3, 224, 224)"
    )


def test_a_user_error_in_a_real_process_has_no_traceback(para_corpus, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgewise",
            "bench",
            "para",
            "--data",
            str(para_corpus),
            "--out",
            str(tmp_path),
        ]
        + ["--tasks", "mood"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "edgewise: error: --tasks: unknown task(s) mood; valid tasks: emotion, gender, accent, rate, pitch, disambig"
    )
