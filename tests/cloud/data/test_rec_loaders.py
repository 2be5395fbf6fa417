"""Reading recommendation data: a user's CSV/Parquet with its item table, MovieLens layouts and
RecBole atomic files, written small in tmp_path (no data is committed), plus RecBole's real
ml-100k copy. Every bad input is a DataError naming the file, the row and the column."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.cli import main
from edgewise.cloud.data import rec_loaders
from edgewise.cloud.data.rec_loaders import (
    count_out_of_order,
    load_interactions,
    load_ml100k,
    load_movielens,
    load_recbole_atomic,
    read_atomic_file,
)
from edgewise.errors import ConfigError, DataError, MissingDependencyError
from tests.conftest import missing_tool

GOOD = """user,item,timestamp,rating,watch_time,item_duration
u1,a,2024-01-01T00:00:10Z,4,12.5,30
u1,b,5,3,7,60
u2,a,100,5,30,30
u1,c,1704067200,2,1,90
u2,b,90,1,0,60
u1,b,5,3,7,60
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_is_indexed_sorted_and_cleaned(tmp_path):
    ds = load_interactions(write(tmp_path / "log.csv", GOOD))
    assert ds.user_ids == ["u1", "u2"] and ds.item_ids == ["a", "b", "c"]
    # u1: b@5, c@2024-01-01T00:00:00, a@2024-01-01T00:00:10; u2: b@90, a@100
    assert [s.tolist() for s in ds.sequences()] == [[1, 2, 0], [1, 0]]
    assert ds.timestamp.tolist() == [5, 1704067200, 1704067210, 90, 100]
    assert ds.rating.tolist() == [3, 2, 4, 1, 5]
    assert ds.watch_time.tolist() == [7, 1, 12.5, 0, 30]
    assert ds.item_duration.tolist() == [30, 60, 90]
    cleaning = ds.meta["cleaning"]
    assert cleaning["duplicates_dropped"] == 1  # the last row repeats u1,b,5
    assert cleaning["out_of_order"] == 3  # u1's b@5 and c@2024-01-01 after a@2024-01-01T00:00:10, u2's b@90
    assert cleaning["bad_rows_skipped"] == 0 and cleaning["interactions"] == 5


def test_empty_watch_time_is_a_bad_row_but_an_empty_duration_is_unknown(tmp_path):
    text = GOOD.replace("u1,b,5,3,7,60\nu2", "u1,b,5,3,7,\nu2")
    ds = load_interactions(write(tmp_path / "log.csv", text))
    assert ds.item_duration.tolist() == [30, 60, 90]  # b's duration comes from the other rows
    text = GOOD.replace("u1,b,5,3,7,60\nu2", "u1,b,5,3,,60\nu2")
    with pytest.raises(DataError, match=r"row 3, column 'watch_time': empty watch time"):
        load_interactions(write(tmp_path / "log2.csv", text))


def test_column_names_are_mappable(tmp_path):
    text = "customer_id,sku,ts\nc9,p1,3\nc9,p2,4\n"
    ds = load_interactions(
        write(tmp_path / "log.csv", text), columns={"user": "customer_id", "item": "sku", "timestamp": "ts"}
    )
    assert ds.user_ids == ["c9"] and ds.sequences()[0].tolist() == [0, 1]
    with pytest.raises(
        DataError, match=r"missing required column\(s\) 'user'; columns found: customer_id, sku, ts"
    ):
        load_interactions(tmp_path / "log.csv", columns={"item": "sku", "timestamp": "ts"})
    with pytest.raises(DataError, match=r"no column 'stars' \(given for rating\)"):
        load_interactions(
            tmp_path / "log.csv",
            columns={"user": "customer_id", "item": "sku", "timestamp": "ts", "rating": "stars"},
        )
    with pytest.raises(ConfigError, match="unknown role"):
        load_interactions(tmp_path / "log.csv", columns={"usr": "customer_id"})


@pytest.mark.parametrize(
    "row, column, problem",
    [
        (" ,a,5", "user", "empty user id"),
        ("u1,,5", "item", "empty item id"),
        ("u1,a,yesterday", "timestamp", "timestamp is neither epoch seconds nor an ISO date: 'yesterday'"),
        ("u1,a,", "timestamp", "empty timestamp"),
        ("u1,a,5,x", "rating", "rating is not a number: 'x'"),
        ("u1,a,5,3,-2", "watch_time", "negative watch time: -2"),
        ("u1,a,5,3,1,0", "item_duration", "item duration must be positive, got 0"),
        ("u1,a,5,3,1,10,maybe", "disliked", "disliked must be true/false, yes/no or 1/0, got 'maybe'"),
    ],
)
def test_each_bad_value_is_named_with_file_row_and_column(tmp_path, row, column, problem):
    header = "user,item,timestamp,rating,watch_time,item_duration,disliked\n"
    filled = row + "," * (6 - row.count(","))
    path = write(tmp_path / "log.csv", header + "u1,b,1,5,1,10,no\n" + filled + "\n")
    with pytest.raises(DataError) as err:
        load_interactions(path)
    message = str(err.value)
    assert str(path) in message
    assert f"row 3, column '{column}': {problem}" in message


def test_many_bad_rows_list_the_first_ten_and_the_total(tmp_path):
    lines = ["user,item,timestamp"] + [f"u{k},i{k},{'x' if k % 2 else k}" for k in range(40)]
    path = write(tmp_path / "log.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load_interactions(path)
    message = str(err.value)
    assert "20 bad rows (the first 10)" in message and "--on-bad-rows skip" in message
    assert message.count("column 'timestamp'") == 10
    assert "row 3, column 'timestamp'" in message and "row 21," in message and "row 23," not in message
    ds = load_interactions(path, on_bad_rows="skip")
    assert ds.n_interactions == 20 and ds.meta["cleaning"]["bad_rows_skipped"] == 20
    assert ds.n_users == 20  # users that only had bad rows are gone


def test_blank_lines_keep_row_numbers_and_are_not_bad_rows(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\nu1,a,1\n\nu1,b,oops\n\n")
    with pytest.raises(DataError, match="row 4, column 'timestamp'"):
        load_interactions(path)
    ds = load_interactions(path, on_bad_rows="skip")
    assert ds.meta["cleaning"]["blank_lines"] == 2 and ds.n_interactions == 1


def test_conflicting_durations_name_the_item_and_rows(tmp_path):
    text = "user,item,timestamp,item_duration\nu1,a,1,30\nu2,a,2,30\nu3,a,3,45\n"
    with pytest.raises(
        DataError, match=r"item 'a' has conflicting durations: 30 s at row 2 and 45 s at row 4"
    ):
        load_interactions(write(tmp_path / "log.csv", text))


def test_unusable_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_interactions(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="empty file"):
        load_interactions(write(tmp_path / "empty.csv", ""))
    with pytest.raises(DataError, match=r"no data rows \(columns: user, item, timestamp\)"):
        load_interactions(write(tmp_path / "header.csv", "user,item,timestamp\n"))
    (tmp_path / "latin.csv").write_bytes(b"user,item,timestamp\nJos\xe9,a,1\n")
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_interactions(tmp_path / "latin.csv")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="cannot read as Parquet"):
        load_interactions(tmp_path / "broken.parquet")
    with pytest.raises(DataError, match="cannot parse as CSV: .*Expected 3 fields in line 3, saw 5"):
        load_interactions(write(tmp_path / "ragged.csv", "user,item,timestamp\nu1,a,1\nu1,b,1,9,9\n"))
    with pytest.raises(DataError, match="column name\\(s\\) 'item' appear more than once"):
        load_interactions(write(tmp_path / "twice.csv", "user,item,item,timestamp\nu1,a,b,1\n"))


ITEMS = """item,title,category,description,duration
a,Alpha,news,The first,30
b,Beta,music,,60
c,Gamma,news,Never watched,90
"""


def test_item_table_keeps_unseen_items_and_refuses_unknown_ones(tmp_path):
    items = write(tmp_path / "items.csv", ITEMS)
    log = write(tmp_path / "log.csv", "user,item,timestamp,watch_time\nu1,a,1,5\nu1,b,2,50\nu2,b,3,1\n")
    ds = load_interactions(log, items)
    assert ds.item_ids == ["a", "b", "c"] and ds.n_items == 3
    assert ds.item_texts() == ["Alpha. news. The first", "Beta. music", "Gamma. news. Never watched"]
    assert ds.item_duration.tolist() == [30, 60, 90]
    assert ds.meta["cleaning"]["items_without_interactions"] == 1
    write(log, "user,item,timestamp\nu1,a,1\nu1,zz,2\n")
    with pytest.raises(DataError, match=rf"row 3, column 'item': item 'zz' is not in the item table {items}"):
        load_interactions(log, items)
    assert load_interactions(log, items, on_bad_rows="skip").n_interactions == 1


def test_item_table_bad_rows_and_duration_clash(tmp_path):
    items = write(tmp_path / "items.csv", ITEMS + "a,Again,news,,30\n")
    log = write(tmp_path / "log.csv", "user,item,timestamp\nu1,a,1\n")
    with pytest.raises(
        DataError, match=r"items.csv: row 5, column 'item': duplicate item id 'a' \(first at row 2\)"
    ):
        load_interactions(log, items)
    write(items, ITEMS)
    write(log, "user,item,timestamp,item_duration\nu1,a,1,31\n")
    with pytest.raises(DataError, match="item 'a' has duration 31 s here but 30 s in the item table"):
        load_interactions(log, items)


def test_parquet_with_integer_ids_and_datetimes(tmp_path):
    frame = pd.DataFrame(
        {
            "user": [7, 7, 3],
            "item": [10, 2, 10],
            "timestamp": pd.to_datetime(["2024-01-02", "2024-01-01", "2024-01-03"]),
            "watch_time": [1.5, 2.5, 3.5],
        }
    )
    frame.to_parquet(tmp_path / "log.parquet")
    ds = load_interactions(tmp_path / "log.parquet")
    assert ds.user_ids == ["3", "7"] and ds.item_ids == ["2", "10"]
    assert [s.tolist() for s in ds.sequences()] == [[1], [0, 1]]
    assert ds.timestamp.tolist() == [1704240000, 1704067200, 1704153600]
    frame.loc[1, "watch_time"] = -1.0
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet: row 2, column 'watch_time': negative watch time: -1"):
        load_interactions(tmp_path / "bad.parquet")


def test_time_order_drops_duplicates_and_keeps_file_order_for_ties(monkeypatch):
    user = np.array([1, 0, 1, 1, 0, 1])
    item = np.array([7, 3, 8, 7, 3, 9])
    ts = np.array([5, 2, 5, 5, 1, 4])
    order, n_dup, n_late = rec_loaders.time_order(user, item, ts)
    assert order.tolist() == [4, 1, 5, 0, 2]  # row 3 repeats row 0 (1, 7, 5); row 4 is row 1's past
    assert (n_dup, n_late) == (1, 2)
    rng = np.random.default_rng(0)
    user, item, ts = rng.integers(0, 30, 2000), rng.integers(0, 20, 2000), rng.integers(0, 50, 2000)
    packed = rec_loaders.time_order(user, item, ts)
    monkeypatch.setattr(rec_loaders, "PACKED_KEY_LIMIT", 0)  # the lexsort path for huge keys
    sorted_ = rec_loaders.time_order(user, item, ts)
    assert packed[0].tolist() == sorted_[0].tolist() and packed[1:] == sorted_[1:]
    late_by_loop = sum(any(ts[j] > ts[i] for j in range(i) if user[j] == user[i]) for i in range(300))
    assert count_out_of_order(user[:300], ts[:300]) == late_by_loop


def test_count_out_of_order():
    assert count_out_of_order(np.array([0, 0, 0, 1, 1]), np.array([5, 3, 4, 1, 1])) == 2
    assert count_out_of_order(np.array([0, 1, 0]), np.array([1, 0, 2])) == 0


# --- MovieLens layouts -------------------------------------------------------------------------
def make_ml100k_raw(root: Path) -> Path:
    root.mkdir()
    (root / "u.data").write_text("1\t2\t5\t881250949\n1\t1\t3\t881250940\n2\t1\t4\t881250000\n")
    flags = ["0"] * 19
    toy = flags.copy()
    toy[3] = toy[4] = "1"  # Animation, Children's
    lines = [
        "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(toy),
        "2|Pokémon (1998)|01-Jan-1998||http://y|" + "|".join(flags[:-1] + ["1"]),
    ]
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return root


def test_movielens_100k_raw_layout(tmp_path):
    ds = load_movielens(make_ml100k_raw(tmp_path / "ml-100k"))
    assert ds.meta["source"] == "ml-100k" and "Harper" in ds.meta["licence"]
    assert ds.item_texts() == ["Toy Story (1995). Animation, Children's", "Pokémon (1998). Western"]
    assert [s.tolist() for s in ds.sequences()] == [[0, 1], [0]]
    assert ds.rating.tolist() == [3, 5, 4]


def test_movielens_1m_layout_with_double_colons(tmp_path):
    root = tmp_path / "ml-1m"
    root.mkdir()
    (root / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (root / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James and the Giant Peach (1996)::Animation|Children's|Musical\n".encode(
            "latin-1"
        )
    )
    ds = load_movielens(root)
    assert ds.item_ids == ["1193", "661"]  # movie file order
    assert ds.item_fields["category"] == ["Drama", "Animation, Children's, Musical"]
    assert ds.n_interactions == 3 and ds.sequences()[0].tolist() == [0, 1]
    with open(root / "ratings.dat", "a") as fh:
        fh.write("3::661::five::978298413\n")
    with pytest.raises(
        DataError, match=r"ratings.dat: row 4, column 'rating': rating is not a number: 'five'"
    ):
        load_movielens(root)


def test_movielens_csv_layout(tmp_path):
    root = tmp_path / "ml-latest-small"
    root.mkdir()
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"
    )
    (root / "movies.csv").write_text(
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n3,Heat (1995),(no genres listed)\n'
    )
    ds = load_movielens(root)
    assert ds.meta["source"] == "ml-latest-small"
    assert ds.item_texts() == ["American President, The (1995). Comedy, Drama, Romance", "Heat (1995)"]
    assert ds.sequences()[0].tolist() == [1, 0]
    assert ds.rating.dtype == np.float32 and ds.rating.tolist() == [4.5, 4.0]


def test_unknown_directory_says_which_files_were_expected(tmp_path):
    with pytest.raises(DataError, match=r"expected u.data \+ u.item \(ml-100k\); ratings.dat \+ movies.dat"):
        load_movielens(tmp_path)


# --- RecBole atomic files ----------------------------------------------------------------------
def test_recbole_atomic_reader_takes_fields_and_types_from_the_header(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    write(
        folder / "shop.inter",
        "user_id:token\titem_id:token\ttimestamp:float\tscore:float\nx\tp\t2\t1\nx\tq\t1\t0\n",
    )
    write(
        folder / "shop.item",
        "item_id:token\ttitle:token_seq\tgenre:token_seq\np\tRed Shoe\tshoes sale\nq\tHat\thats\n",
    )
    table, types = read_atomic_file(folder / "shop.inter")
    assert types == {"user_id": "token", "item_id": "token", "timestamp": "float", "score": "float"}
    assert list(table.frame.columns) == ["user_id", "item_id", "timestamp", "score"]
    ds = load_recbole_atomic(folder)
    assert ds.sequences()[0].tolist() == [1, 0] and ds.rating is None
    assert ds.item_texts() == ["Red Shoe. shoes, sale", "Hat. hats"]
    write(folder / "shop.inter", "user_id\titem_id\n")
    with pytest.raises(DataError, match=r"shop.inter: header column 1 is 'user_id'; expected name:type"):
        load_recbole_atomic(folder)


def test_missing_recbole_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(rec_loaders.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps recbole==1\.2\.1"):
        load_ml100k()


def test_recbole_ml100k_copy_is_read_in_place():
    if importlib.util.find_spec("recbole") is None:
        missing_tool("recbole is not installed (pip install --no-deps recbole==1.2.1)")
    ds = load_ml100k()
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100000)
    assert ds.meta["cleaning"]["duplicates_dropped"] == 0 and ds.meta["cleaning"]["bad_rows_skipped"] == 0
    assert ds.rating.min() == 1 and ds.rating.max() == 5
    assert "recbole" in ds.meta["origin"]


# --- the CLI -----------------------------------------------------------------------------------
def test_cli_csv_writes_a_dataset_and_names_a_bad_row(tmp_path, capsys):
    log = write(tmp_path / "log.csv", "customer,sku,ts\nc1,p1,1\nc1,p2,2\nc2,p1,3\n")
    out = tmp_path / "DATA"
    cmd = ["-q", "data", "rec", "csv", str(log), "--columns", "user=customer,item=sku,timestamp=ts"]
    assert main([*cmd, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["users"] == 2 and summary["items"] == 2 and summary["interactions"] == 3
    assert summary["out"] == str(out.absolute()) and summary["cleaning"]["duplicates_dropped"] == 0

    write(log, "customer,sku,ts\nc1,p1,1\nc1,p2,later\n")
    assert main([*cmd, "--out", str(tmp_path / "D2")]) == 2
    err = capsys.readouterr().err
    assert f"{log}: row 3, column 'ts'" in err and "Traceback" not in err
    assert not (tmp_path / "D2").exists()
    assert main([*cmd, "--out", str(tmp_path / "D2"), "--on-bad-rows", "skip"]) == 0
    assert json.loads(capsys.readouterr().out)["cleaning"]["bad_rows_skipped"] == 1


def test_timestamps_beyond_epoch_range_are_bad_rows(tmp_path):
    path = write(tmp_path / "log.csv", "user,item,timestamp\nu1,a,1\nu1,b,1e30\n")
    with pytest.raises(DataError, match=r"row 3, column 'timestamp': timestamp 1e\+30 is out of range"):
        load_interactions(path)


def test_movie_files_in_utf8_or_latin1_are_both_read(tmp_path):
    root = tmp_path / "ml-10m"
    root.mkdir()
    (root / "ratings.dat").write_text("1::5::3.5::978300760\n")
    (root / "movies.dat").write_text("5::Amélie (2001)::Comedy|Romance\n", encoding="utf-8")
    assert load_movielens(root).item_fields["title"] == ["Amélie (2001)"]
    (root / "movies.dat").write_bytes("5::Amélie (2001)::Comedy|Romance\n".encode("latin-1"))
    assert load_movielens(root).item_fields["title"] == ["Amélie (2001)"]
