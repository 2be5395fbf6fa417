"""The recommendation dataset contract: sorting, per-user views, leave-last-out, and the DATA
directory (round trip, atomic save, errors that name the file and field)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from edgewise.cloud.data.rec_data import (
    RecDataset,
    build_rec_dataset,
    leave_last_out,
    load_rec_dataset,
    natural_order,
    save_rec_dataset,
)
from edgewise.errors import DataError
from tests.conftest import missing_tool


def tiny() -> RecDataset:
    """Three users in file order (not time order); user "b" has two rows at the same time."""
    rows = [  # user, item, timestamp
        (0, 0, 30),
        (1, 2, 5),
        (0, 1, 10),
        (0, 3, 20),
        (2, 1, 1),
        (1, 0, 7),
        (1, 3, 7),
        (0, 2, 40),
        (2, 0, 2),
    ]
    user, item, ts = (np.array(c) for c in zip(*rows))
    return build_rec_dataset(
        user,
        item,
        ts,
        user_ids=["a", "b", "c"],
        item_ids=["i0", "i1", "i2", "i3"],
        rating=np.arange(len(rows), dtype=np.float32),
        watch_time=np.arange(len(rows), dtype=np.float32) * 10,
        disliked=np.array([False, True, False, False, False, False, True, False, False]),
        item_duration=np.array([60, 120, 30, 600], dtype=np.float32),
        item_fields={
            "title": ["Alpha", "Beta.", "", "Delta"],
            "category": ["news", "music", "", ""],
            "description": ["first", "", "", "fourth."],
        },
        meta={"source": "handmade", "cleaning": {"duplicates_dropped": 0}},
    )


def test_rows_are_sorted_by_user_then_time_keeping_file_order_for_ties():
    ds = tiny()
    assert ds.user.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert ds.item.tolist() == [1, 3, 0, 2, 2, 0, 3, 1, 0]  # b: t=5, then its two t=7 rows in file order
    assert ds.timestamp.tolist() == [10, 20, 30, 40, 5, 7, 7, 1, 2]
    assert ds.rating.tolist() == [2, 3, 0, 7, 1, 5, 6, 4, 8]
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 4, 9)


def test_sequences_and_user_slices_follow_time_order():
    ds = tiny()
    seqs = ds.sequences()
    assert [s.tolist() for s in seqs] == [[1, 3, 0, 2], [2, 0, 3], [1, 0]]
    assert all(s.dtype == np.int64 for s in seqs)
    assert [w.tolist() for w in ds.user_slices("watch_time")] == [[20, 30, 0, 70], [10, 50, 60], [40, 80]]
    assert ds.user_offsets().tolist() == [0, 4, 7, 9]
    with pytest.raises(DataError, match="no 'nope' array"):
        ds.user_slices("nope")


def test_item_texts_join_the_fields_that_exist():
    assert tiny().item_texts() == ["Alpha. news. first", "Beta. music", "", "Delta. fourth."]
    bare = RecDataset(["u"], ["x", "y"], np.array([0]), np.array([1]), np.array([3]))
    assert bare.item_texts() == ["", ""]


def test_leave_last_out_matches_recbole_protocol():
    split = leave_last_out(tiny(), min_interactions=3)
    assert split.users.tolist() == [0, 1]
    assert split.n_dropped == 1  # "c" has two interactions
    assert [s.tolist() for s in split.train] == [[1, 3], [2]]
    assert [s.tolist() for s in split.valid_history] == [[1, 3], [2]]
    assert split.valid_target.tolist() == [0, 0]
    assert [s.tolist() for s in split.test_history] == [[1, 3, 0], [2, 0]]
    assert split.test_target.tolist() == [2, 3]
    assert split.users.tolist() == [0, 1]
    assert leave_last_out(tiny(), min_interactions=4).users.tolist() == [0]
    with pytest.raises(ValueError, match="at least 3"):
        leave_last_out(tiny(), min_interactions=2)


def test_construction_checks_name_the_field():
    with pytest.raises(DataError, match="field 'item' row 0 holds index 7"):
        RecDataset(["u"], ["x"], np.array([0]), np.array([7]), np.array([1]))
    with pytest.raises(DataError, match="field 'rating' has shape"):
        RecDataset(["u"], ["x"], np.array([0]), np.array([0]), np.array([1]), rating=np.ones(2))
    with pytest.raises(DataError, match="item field 'title' has 1 entries, expected 2"):
        RecDataset(
            ["u"], ["x", "y"], np.array([0]), np.array([0]), np.array([1]), item_fields={"title": ["a"]}
        )
    with pytest.raises(DataError, match="not sorted"):
        RecDataset(["u"], ["x"], np.array([0, 0]), np.array([0, 0]), np.array([5, 1]))


def test_natural_order_sorts_numbers_numerically():
    assert natural_order(["10", "2", "1"]) == ["1", "2", "10"]
    assert natural_order(["b", "10", "a"]) == ["10", "a", "b"]


def test_save_and_load_round_trip(tmp_path):
    ds = tiny()
    out = save_rec_dataset(ds, tmp_path / "DATA")
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json",
        "interactions.npz",
        "items.jsonl",
        "users.json",
    ]
    back = load_rec_dataset(out)
    for name in ("user", "item", "timestamp", "rating", "watch_time", "disliked", "item_duration"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
        assert getattr(back, name).dtype == getattr(ds, name).dtype
    assert back.user_ids == ds.user_ids and back.item_ids == ds.item_ids
    assert back.item_fields == ds.item_fields
    assert back.meta == ds.meta
    info = json.loads((out / "dataset.json").read_text())
    assert info["schema_version"] == 1 and info["n_interactions"] == 9
    first = json.loads((out / "items.jsonl").read_text().splitlines()[0])
    assert first == {
        "id": "i0",
        "title": "Alpha",
        "category": "news",
        "description": "first",
        "duration": 60.0,
    }


def test_minimal_dataset_round_trips_without_optional_parts(tmp_path):
    ds = RecDataset(["u1", "u2"], ["x"], np.array([0, 1]), np.array([0, 0]), np.array([1, 2]))
    back = load_rec_dataset(save_rec_dataset(ds, tmp_path / "D"))
    assert back.rating is None and back.watch_time is None and back.item_duration is None
    assert back.item_fields == {} and back.sequences()[1].tolist() == [0]


def test_save_refuses_a_non_empty_directory_and_force_replaces_only_datasets(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="already exists and is not empty"):
        save_rec_dataset(tiny(), tmp_path / "busy")
    with pytest.raises(DataError, match="not a rec dataset"):
        save_rec_dataset(tiny(), tmp_path / "busy", force=True)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    save_rec_dataset(tiny(), tmp_path / "empty")  # an empty directory is fine
    small = RecDataset(["u"], ["x"], np.array([0]), np.array([0]), np.array([1]))
    save_rec_dataset(small, tmp_path / "empty", force=True)
    assert load_rec_dataset(tmp_path / "empty").n_interactions == 1


def test_a_failed_save_leaves_nothing(tmp_path):
    ds = tiny()
    ds.meta["unserializable"] = object()  # dataset.json, the last file, cannot be written
    with pytest.raises(TypeError):
        save_rec_dataset(ds, tmp_path / "DATA")
    assert list(tmp_path.iterdir()) == []


def test_load_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(DataError, match="no such dataset directory"):
        load_rec_dataset(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="no dataset.json"):
        load_rec_dataset(tmp_path / "plain")

    out = save_rec_dataset(tiny(), tmp_path / "D1")
    lines = (out / "items.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"duration": 30.0', '"duration": -1')
    (out / "items.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"items.jsonl:3: field 'duration' must be a positive number"):
        load_rec_dataset(out)

    out = save_rec_dataset(tiny(), tmp_path / "D2")
    with np.load(out / "interactions.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != "timestamp"}
    np.savez(out / "interactions.npz", **arrays)
    with pytest.raises(DataError, match=r"interactions.npz: field 'timestamp' is missing"):
        load_rec_dataset(out)

    out = save_rec_dataset(tiny(), tmp_path / "D3")
    info = json.loads((out / "dataset.json").read_text())
    info["n_items"] = 5
    (out / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"items.jsonl: 4 items, expected 5"):
        load_rec_dataset(out)


@pytest.fixture(scope="module")
def ml100k():
    if importlib.util.find_spec("recbole") is None:
        missing_tool("recbole is not installed (pip install --no-deps recbole==1.2.1)")
    return load_rec_dataset("ml-100k")


def test_ml100k_by_name_reads_recboles_copy(ml100k):
    assert (ml100k.n_users, ml100k.n_items, ml100k.n_interactions) == (943, 1682, 100000)
    assert ml100k.meta["source"] == "ml-100k"
    assert "Harper" in ml100k.meta["licence"] and "redistribution" in ml100k.meta["licence"]
    assert ml100k.item_texts()[0] == "Toy Story (1995). Animation, Children's, Comedy"
    split = leave_last_out(ml100k)
    assert len(split.users) == 943 and split.n_dropped == 0  # every ml-100k user has >= 20 ratings
    seqs = ml100k.sequences()
    assert sum(len(s) for s in seqs) == 100000
    times = ml100k.user_slices("timestamp")
    assert all(np.all(np.diff(t) >= 0) for t in times)
