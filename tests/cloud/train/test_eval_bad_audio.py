"""``edgewise eval`` refuses non-finite audio with a named error instead of scoring NaN features."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from edgewise.cli import main
from edgewise.cloud.data.corpus import load_corpus

pytestmark = pytest.mark.slow  # uses the session's tiny trained run


def test_eval_names_a_file_with_nan_or_inf_samples(tiny_run, edge_corpus, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(edge_corpus, corpus, ignore=shutil.ignore_patterns(".edgewise-cache"))
    tests = sorted(u.path for u in load_corpus(corpus).split("test"))
    for path, bad in ((tests[0], np.nan), (tests[1], np.inf)):
        audio, sr = sf.read(str(path), dtype="float32")
        audio[100] = bad
        sf.write(str(path), audio, sr, subtype="FLOAT")
    assert main(["eval", "ser", str(tiny_run), "--data", str(corpus)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{tests[0]}: non-finite audio: 1 NaN and 0 infinite sample(s)" in err
    assert f"{tests[1]}: non-finite audio: 0 NaN and 1 infinite sample(s)" in err
    assert main(["eval", "ser", str(tiny_run), "--data", str(corpus), "--skip-bad"]) == 0  # the rest scores
