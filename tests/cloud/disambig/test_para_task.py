"""The disambiguation corpus as a task of the paralinguistic benchmark (``--tasks disambig``)."""

from __future__ import annotations

import json

import pytest

from edgewise.cli import main
from edgewise.cloud.data.corpus import load_corpus
from edgewise.cloud.para.tasks import TASKS, corpus_fields, supported, task_targets

pytestmark = pytest.mark.slow


def test_the_reading_is_the_target_and_bench_para_scores_it(disambig_corpus, tmp_path):
    corpus = load_corpus(disambig_corpus)
    fields = corpus_fields(corpus)
    task = TASKS["disambig"]
    assert supported(task, fields) and not supported(
        task, [{"label": "happy"}]
    )  # an emotion corpus has no reading
    targets = task_targets(task, corpus, fields)
    assert [targets.classes[v] for v in targets.values] == [u.label for u in corpus.utterances]
    out = tmp_path / "para"
    argv = ["-q", "bench", "para", "--data", str(disambig_corpus), "--tasks", "disambig"]
    argv += ["--encoders", "logmel", "--seeds", "0", "--max-epochs", "5", "--workers", "1", "--no-plot"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "para_bench.json").read_text())
    assert report["tasks"]["disambig"]["classes"] == list(targets.classes)
    assert 0.0 <= report["summary"]["disambig"]["logmel"]["ua"]["mean"] <= 1.0
