"""The recommender on the device: a rec bundle opened torch-free, its tables checked against each other
and the model, the request rules (unknown ids, empty and long histories, k and beam), the install-time
parity check of its graphs, and ``edgewise recommend``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgewise.bundle import BundleError, IntegrityError, generate_keypair, load_bundle, sign_manifest
from edgewise.cli import main
from edgewise.devices import load_profile
from edgewise.edge.install import install_bundle
from edgewise.edge.pipelines.rec import RecInputError, RecPipeline
from edgewise.edge.reference import read_device_parity
from edgewise.errors import DataError
from edgewise.rec_ids import SemanticIds
from tests.edge.rec_tamper import rehash, swap_catalogue

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipe(rec_bundle):
    p = RecPipeline.from_bundle(rec_bundle, load_profile("x86-local"), threads=1)
    yield p
    p.close()


def _copy(rec_bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / rec_bundle.name
    shutil.copytree(rec_bundle, dest)
    return dest


def test_a_tampered_trie_is_refused_naming_the_file(rec_bundle, tmp_path):
    bundle = _copy(rec_bundle, tmp_path)
    trie_file = bundle / "rec" / "prefix_trie.npz"
    data = bytearray(trie_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    trie_file.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"rec/prefix_trie\.npz: sha256 mismatch"):
        RecPipeline.from_bundle(bundle, load_profile("x86-local"))


def test_a_trie_of_other_ids_is_refused_naming_the_file(rec_bundle, tmp_path):
    bundle = _copy(rec_bundle, tmp_path)
    swap_catalogue(bundle, trie_only=True)  # two items swap IDs in the trie: valid, but not these IDs
    with pytest.raises(DataError, match=r"rec/prefix_trie\.npz: does not match the semantic IDs: item 0"):
        RecPipeline.from_bundle(bundle, load_profile("x86-local"))


def test_ids_and_trie_of_another_catalogue_are_refused(rec_bundle, tmp_path):
    """IDs and trie that agree with each other, and with the manifest's hashes, but not with the model."""
    bundle = _copy(rec_bundle, tmp_path)
    swap_catalogue(bundle)
    with pytest.raises(
        BundleError, match=r"rec_(context|decoder)\.fp32\.onnx: the model was trained on another catalogue"
    ):
        RecPipeline.from_bundle(bundle, load_profile("x86-local"))


def _edit_items(bundle: Path, edit) -> None:
    table = json.loads((bundle / "rec" / "items.json").read_text())
    edit(table)
    (bundle / "rec" / "items.json").write_text(json.dumps(table))
    rehash(bundle, "items")


def _set(key, value):
    return lambda table: table.__setitem__(key, value)


def _swap_first_ids(table) -> None:
    table["ids"][0], table["ids"][1] = table["ids"][1], table["ids"][0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [(lambda t: t.pop("titles"), r"rec/items\.json: not an item table \(KeyError\('titles'\)\)"),
     (_set("popular", [999]), r"rec/items\.json: 'popular' must list item indices 0\.\.\d+"),
     (_set("popular", []), "'popular' must list item indices"),
     (lambda t: t["ids"].__setitem__(1, t["ids"][0]), r"rec/items\.json: item ids are not unique"),
     (lambda t: (t["ids"].pop(), t["titles"].pop()), r"the model knows \d+ items; \{'semantic IDs': \d+, 'item ids': \d+"),
     (_swap_first_ids, r"rec_(context|decoder)\.fp32\.onnx: the model was trained on another catalogue")],
)  # fmt: skip
def test_a_bad_item_table_is_refused_naming_the_file(rec_bundle, tmp_path, edit, message):
    bundle = _copy(rec_bundle, tmp_path)
    _edit_items(bundle, edit)
    with pytest.raises(BundleError, match=message):
        RecPipeline.from_bundle(bundle, load_profile("x86-local"))


def test_semantic_ids_of_other_level_sizes_are_refused(rec_bundle, tmp_path):
    bundle = _copy(rec_bundle, tmp_path)
    ids = SemanticIds.load(bundle / "rec" / "semantic_ids.npz")
    wider = SemanticIds(ids.codes, (ids.level_sizes[0] + 1, *ids.level_sizes[1:]))
    wider.save(bundle / "rec" / "semantic_ids.npz")
    rehash(bundle, "semantic_ids")
    with pytest.raises(BundleError, match=r"rec/semantic_ids\.npz: level sizes \[\d+, .*the model's are"):
        RecPipeline.from_bundle(bundle, load_profile("x86-local"))


def test_a_decoder_over_another_vocabulary_is_refused(rec_bundle, tmp_path):
    bundle = _copy(rec_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for out in manifest["models"]["rec_decoder"]["outputs"]:
        if out["name"] == "logits":
            out["shape"][-1] += 1
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="logits over 17 tokens"):
        RecPipeline.from_bundle(bundle, load_profile("x86-local"))


def test_unknown_ids_are_dropped_and_reported(pipe):
    result = pipe.recommend(["i3", "nope", "i7", "nope", "i9"], k=5, beam=20)
    assert result["unknown"] == ["nope"] and result["unknown_count"] == 1
    assert result["history_used"] == 3 and len(result["items"]) == 5 and result["fallback"] is None
    assert result["items"] == pipe.recommend(["i3", "i7", "i9"], k=5, beam=20)["items"]
    assert all(result["scores"][i] >= result["scores"][i + 1] for i in range(4))
    assert set(result["timings"]) == {"context_ms", "decode_ms", "total_ms"}


def test_a_history_of_only_unknown_ids_is_an_error(pipe):
    with pytest.raises(
        RecInputError, match=r"none of the 2 history item ids is in this bundle's catalogue \('x', 'y'\)"
    ):
        pipe.recommend(["x", "y"])


def test_an_empty_history_gets_the_most_popular_items(pipe):
    result = pipe.recommend([], k=4)
    assert result["fallback"] == "popular" and result["scores"] is None
    assert result["items"] == [pipe.tables.item_ids[i] for i in pipe.tables.popular[:4]]
    assert len(result["titles"]) == 4


def test_a_long_history_keeps_the_most_recent_items(pipe):
    recent = [f"i{i}" for i in range(20, 32)]
    result = pipe.recommend([f"i{i}" for i in range(40)] + recent, k=10)
    assert result["truncated"] == 40 and result["history_used"] == 12
    assert result["items"] == pipe.recommend(recent, k=10)["items"]


@pytest.mark.parametrize(
    ("k", "beam", "message"),
    [(30, 20, "k must be between 1 and the beam width \\(20\\), got 30"), (0, 20, "k must be between 1"),
     (5, 0, "beam must be between 1 and 256"), (5, 1000, "beam must be between 1 and 256"),
     ("5", 20, "k must be an integer"), (300, None, "k must be between 1 and 256, got 300")],
)  # fmt: skip
def test_bad_k_and_beam_are_errors(pipe, k, beam, message):
    with pytest.raises(RecInputError, match=message):
        pipe.recommend(["i1"], k=k, beam=beam)


def test_a_request_of_more_than_the_id_limit_is_refused(pipe):
    from edgewise.edge.pipelines.rec import MAX_HISTORY_IDS

    with pytest.raises(
        RecInputError, match=f"history has {MAX_HISTORY_IDS + 1} ids; the limit is {MAX_HISTORY_IDS}"
    ):
        pipe.recommend(["i1"] * (MAX_HISTORY_IDS + 1))
    assert pipe.recommend(["i1"] * MAX_HISTORY_IDS, k=3)["history_used"] == pipe.settings.max_len


def test_repeated_items_are_kept_in_order(pipe):
    repeated = pipe.recommend(["i3", "i3", "i3", "i5"], k=5)
    assert repeated["history_used"] == 4 and repeated["unknown_count"] == 0
    assert repeated["scores"] != pipe.recommend(["i3", "i5"], k=5)["scores"]


def test_the_pipeline_says_the_catalogue_was_checked(pipe):
    assert pipe.describe()["catalogue_checked"] is True


def test_the_daemon_payload_is_checked(pipe):
    result = pipe.process({"history": ["i1", "i2"], "k": 3})
    assert len(result["items"]) == 3 and result["beam"] == 20
    for args, message in (
        ({}, "args.history is required"),
        ({"history": "i1,i2"}, "must be a list of item ids"),
        ({"history": ["i1"], "top": 3}, r"unknown argument\(s\) \['top'\]"),
        ([1, 2], "args must be an object"),
    ):
        with pytest.raises(RecInputError, match=message):
            pipe.process(args)


def test_install_checks_both_graphs_against_their_reference_sets(rec_bundle, tmp_path):
    installed = install_bundle(tmp_path / "root", rec_bundle)
    record = read_device_parity(installed)
    results = record["artifacts"]
    assert len(results) == 4  # two graphs, fp32 and int8
    assert {r["status"] for r in results.values()} == {"passed"}, results
    fp32 = results["models/rec_decoder.fp32.onnx"]
    assert fp32["max_abs_diff"] <= 1e-3 and set(fp32["outputs"]) >= {"logits", "present_k_0"}
    with load_bundle(installed) as bundle:
        assert RecPipeline.from_bundle(bundle, load_profile("x86-local")).recommend(["i1"])["items"]


# -- edgewise recommend ---------------------------------------------------------------------------


def test_recommend_prints_json_with_items_and_timings(rec_bundle, capsys):
    code = main(["-q", "recommend", str(rec_bundle), "--history", "i1, i2,i3,unknown", "--k", "5", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["items"]) == len(result["titles"]) == len(result["scores"]) == 5
    assert result["unknown"] == ["unknown"] and result["beam"] == 20
    assert set(result["timings"]) == {"context_ms", "decode_ms", "total_ms", "load_ms"}
    assert np.isfinite(result["scores"]).all()
    assert result["backend"] == {
        "rec_context": "models/rec_context.fp32.onnx",
        "rec_decoder": "models/rec_decoder.fp32.onnx",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--history", "zz,yy"], "none of the 2 history item ids"),
     (["--history", "i1", "--k", "30", "--beam", "20"], "k must be between 1 and the beam width (20)"),
     (["--history", "i1", "--threads", "0"], "--threads must be at least 1"),
     (["--history", "i1", "--k", "300"], "k must be between 1 and 256, got 300")],
)  # fmt: skip
def test_recommend_bad_input_is_exit_2_naming_the_problem(rec_bundle, capsys, args, message):
    assert main(["-q", "recommend", str(rec_bundle), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_recommend_verifies_the_signature(rec_bundle, tmp_path, capsys):
    bundle = _copy(rec_bundle, tmp_path)
    generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    sign_manifest(bundle, tmp_path / "fleet.key")
    assert (
        main(["-q", "recommend", str(bundle), "--history", "i4", "--key", str(tmp_path / "fleet.pub")]) == 0
    )
    assert "10 items in" in capsys.readouterr().out
    assert (
        main(["-q", "recommend", str(bundle), "--history", "i4", "--key", str(tmp_path / "other.pub")]) == 2
    )
    assert "manifest.sig" in capsys.readouterr().err


def test_the_deploy_smoke_test_runs_one_request(rec_bundle):
    from edgewise.edge.deploy.preflight import open_and_test

    info = open_and_test(rec_bundle, load_profile("x86-local"))
    assert info["task"] == "rec" and info["inference"].startswith("self-test in")
    assert "rec_decoder models/rec_decoder.fp32.onnx" in info["backend"]
