"""What a user can get wrong: each is one clear message and exit 2, never a traceback or a bundle."""

from __future__ import annotations

import json
import shutil

import pytest

from edgewise.cli import main


def _export(run, out, *extra):
    return main(["-q", "export", str(run), "--out", str(out), "--threads", "1", *extra])


def _copy_run(run, tmp_path, edit):
    copy = tmp_path / "run-copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((copy / "model.json").read_text())
    edit(meta)
    (copy / "model.json").write_text(json.dumps(meta))
    return copy


def test_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    assert _export(tmp_path / "notarun", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "not a finished training run (no model.json)" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_from_another_architecture(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path, lambda m: m["model"].update(arch="conformer"))
    assert _export(run, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "model.safetensors: checkpoint does not fit this architecture" in err
    assert not (tmp_path / "out").exists()


def test_a_run_whose_corpus_is_gone_asks_for_data(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path, lambda m: m["provenance"].update(corpus=str(tmp_path / "gone")))
    assert _export(run, tmp_path / "out") == 2
    assert "is not available here; pass --data CORPUS" in capsys.readouterr().err


def test_a_corpus_with_other_labels(tiny_run, tmp_path, capsys):
    from tests.cloud.train.conftest import make_tone_corpus

    other = make_tone_corpus(tmp_path / "corpus", speakers_per_split=(1, 1, 1), per_class=1)
    meta = json.loads((other / "corpus.json").read_text())
    meta["labels"] = ["neutral", "happy", "angry", "sad"]
    (other / "corpus.json").write_text(json.dumps(meta))
    assert _export(tiny_run, tmp_path / "out", "--data", str(other)) == 2
    assert "differ from the run's" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tolerance", "int4=1"], "KEY one of fp32, fp16, int8, int8-dynamic, int8-static"),
        (["--max-ua-drop", "int8=lots"], "'lots' is not a number"),
        (["--version", "one"], "version"),
        (["--quant", "static"], "applies to int8 only"),
    ],
)
def test_bad_options(tiny_run, tmp_path, capsys, args, message):
    assert _export(tiny_run, tmp_path / "out", *args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_an_existing_bundle_is_not_replaced_without_force(tiny_run, exported, capsys):
    folder, _ = exported
    before = (folder / "manifest.json").read_bytes()
    assert _export(tiny_run, folder.parent) == 2
    assert "already exists" in capsys.readouterr().err
    assert (folder / "manifest.json").read_bytes() == before


def test_an_unusable_sign_key_fails_before_any_export(tiny_run, tmp_path, capsys):
    key = tmp_path / "bad.key"
    key.write_bytes(b"not a key")
    assert _export(tiny_run, tmp_path / "out", "--sign-key", str(key)) == 2
    assert "bad.key" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
