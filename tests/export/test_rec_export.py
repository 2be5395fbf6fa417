"""``edgewise export`` of a lazy rec run: two ONNX graphs per precision, their parity with PyTorch, the
device's numpy beam search against PyTorch's, and the bundle's tables (real files, real onnxruntime)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from edgewise.bundle import load_bundle
from edgewise.cli import main
from edgewise.edge.backends import OnnxBackend
from edgewise.edge.pipelines.rec import ROLES, RecPipeline, beam_search, open_tables
from edgewise.export.rec import GRAPH_ATOL, MAX_NDCG_DROP, MIN_SAME_TOPK, _e2e_failures
from edgewise.rec_ids import CATALOGUE_DIGEST_KEY, catalogue_digest, pad_left

pytestmark = pytest.mark.slow


def test_the_bundle_ships_both_graphs_in_both_precisions_with_their_parity(rec_bundle):
    with load_bundle(rec_bundle) as bundle:
        manifest = bundle.manifest
        assert manifest.task == "rec" and sorted(manifest.models) == sorted(ROLES)
        for role in ROLES:
            arts = {a.precision: a for a in bundle.artifacts(role)}
            assert sorted(arts) == ["fp32", "int8"] and all(a.format == "onnx" for a in arts.values())
            assert arts["int8"].quant == "dynamic"
            fp32 = arts["fp32"].parity
            assert fp32["passed"] and fp32["max_abs_diff"] <= GRAPH_ATOL["fp32"]
            e2e = fp32["end_to_end"]
            assert e2e["users"] == 120 and e2e["same_topk"] >= MIN_SAME_TOPK
            assert e2e["score_max_abs_diff"] <= 1e-4
            assert e2e["metrics"] == e2e["metrics_pytorch"]
            int8 = arts["int8"].parity["end_to_end"]
            for key in ("hr@10", "ndcg@10"):  # the int8 metrics are recorded next to PyTorch's
                assert 0 <= int8["metrics"][key] <= 1 and key in int8["metrics_pytorch"]
            assert 0 < int8["topk_overlap"] <= 1 and int8["ndcg@10_drop"] <= MAX_NDCG_DROP
            ref = arts["fp32"].extra["reference"]
            assert ref["version"] == 2 and ref["export_check"]["passed"]
        rec = manifest.preprocessing["rec"]
        assert rec["max_len"] == 12 and rec["n_items"] == 60 and rec["beam"] == 20 and rec["top_k"] == 10
        assert sorted(rec["files"]) == ["items", "prefix_trie", "semantic_ids"]
        settings, tables = open_tables(bundle)  # every file's sha256 checked, the trie against the IDs
        digest = catalogue_digest(tables.ids, tables.item_ids)
        for art in bundle.artifacts():  # each graph records the catalogue it was trained on
            meta = onnx.load(str(bundle.root / art.path)).metadata_props
            assert {p.key: p.value for p in meta}[CATALOGUE_DIGEST_KEY] == digest, art.path
    assert settings.vocab == sum(rec["level_sizes"]) and tables.trie.n_items == 60
    assert tables.item_ids[:2] == ["i0", "i1"] and len(tables.popular) == 60


def _torch_reference(rec_run, history):
    import torch

    from edgewise.cloud.models.rec.beam import TorchTrie
    from edgewise.cloud.models.rec.beam import beam_search as torch_beam_search
    from edgewise.cloud.train.rec_job import load_rec_run
    from edgewise.rec_ids import PrefixTrie

    model, info = load_rec_run(rec_run)
    trie = TorchTrie.from_trie(PrefixTrie.build(info["semantic_ids"]))
    return torch_beam_search(model, torch.from_numpy(history), trie, 20)


def test_the_numpy_beam_search_over_the_graphs_equals_pytorchs(rec_bundle, rec_run):
    with load_bundle(rec_bundle) as bundle:
        settings, tables = open_tables(bundle)
        graphs = {
            role: OnnxBackend(
                bundle.artifact_path(bundle.artifacts(role, precision="fp32")[0]), 1, single_io=False
            )
            for role in ROLES
        }
        rng = np.random.default_rng(0)
        rows = [
            [5],  # one item: mostly padding
            [3, 3, 3, 7],  # repeated items
            list(rng.integers(1, 61, 12)),  # exactly max_len
            list(rng.integers(1, 61, 30)),  # longer than max_len: the most recent 12
            [60, 1, 59, 2, 58],
        ]
        history = pad_left(rows, settings.max_len)
        got = beam_search(graphs["rec_context"], graphs["rec_decoder"], history, tables.trie, settings, 20)
        ref = _torch_reference(rec_run, history)
        np.testing.assert_array_equal(got.items, ref.items)
        np.testing.assert_array_equal(got.codes, ref.codes)
        finite = np.isfinite(ref.scores)
        np.testing.assert_array_equal(np.isfinite(got.scores), finite)
        np.testing.assert_allclose(got.scores[finite], ref.scores[finite], atol=1e-4)
        assert (got.items[:, :10] >= 0).all()  # the trie keeps every beam on an item

        # one request at a time through the pipeline, by original item ids, as the device runs it
        pipe = RecPipeline(graphs, settings, tables)
        for r, row in enumerate(rows):
            result = pipe.recommend([tables.item_ids[i - 1] for i in row], k=10, beam=20)
            assert result["items"] == [tables.item_ids[i] for i in ref.items[r, :10]]
            np.testing.assert_allclose(result["scores"], ref.scores[r, :10], atol=1e-4)
            assert result["truncated"] == max(0, len(row) - 12)


def test_a_run_that_is_not_the_lazy_model_is_refused(rec_run, tmp_path, capsys):
    run = tmp_path / "encdec"
    shutil.copytree(rec_run, run)
    info = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**info, "kind": "encdec"}))
    assert main(["-q", "export", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'encdec' rec run" in err and "only the lazy decoder-only model" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_end_to_end_gate_names_what_failed():
    e2e = {
        "k": 10, "same_topk": 0.9, "score_max_abs_diff": 0.5, "ndcg@10_drop": 0.05,
        "metrics": {"ndcg@10": 0.1}, "metrics_pytorch": {"ndcg@10": 0.15},
    }  # fmt: skip
    fp32 = _e2e_failures("fp32", e2e, 0.01)
    assert len(fp32) == 3 and "90.0% of the validation users" in fp32[0] and "differ by 0.5" in fp32[1]
    int8 = _e2e_failures("int8", e2e, 0.01)
    assert int8 == ["int8: NDCG@10 0.1 vs PyTorch 0.15 (more than 0.01 lower)"]
    assert _e2e_failures("int8", e2e, 0.06) == []
