"""Readers for recommendation data, each returning a cleaned :class:`RecDataset`.

- **MovieLens-100K from RecBole's copy** (:func:`load_ml100k`): the ``recbole`` package ships it
  as atomic files; they are found without importing recbole (which fails under numpy 2) and read
  in place, never copied into this repository.
- **RecBole atomic files** (:func:`read_atomic_file`, :func:`load_recbole_atomic`): tab-separated,
  the header names each field and its type (``user_id:token``, ``rating:float``, ``class:token_seq``).
- **MovieLens directories** (:func:`load_movielens`): ml-100k (``u.data``, ``u.item``), ml-1m and
  ml-10m (``ratings.dat``, ``movies.dat``), ml-20m/25m/32m/latest (``ratings.csv``, ``movies.csv``).
- **A user's own interactions** (:func:`load_interactions`): CSV or Parquet with columns user,
  item, timestamp and optionally rating, watch_time, item_duration, disliked; an optional item
  table (item, title, category, description, duration).

Every reader applies the same cleaning: a bad row (empty id, a timestamp that is neither a number
nor an ISO date, a rating that is not a number, a negative watch time...) is named with its file,
row (as numbered in the file, the header being row 1) and column; by default the file is refused
(the first 10 bad rows and the total), with ``on_bad_rows="skip"`` they are dropped and counted.
Duplicate (user, item, timestamp) rows are dropped, rows out of time order are sorted (stably),
and both are counted in ``meta["cleaning"]``. Parsing is vectorized (pandas), never a Python loop
per row, so ml-20m's 20M ratings read in seconds.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.cloud.data.rec_data import RecDataset, natural_order
from edgewise.errors import ConfigError, DataError, MissingDependencyError

MOVIELENS_LICENCE = (
    "MovieLens data set by GroupLens Research, University of Minnesota, used under GroupLens's "
    "terms of use: research use only, no commercial or revenue-bearing use and no redistribution "
    "without GroupLens's permission, no endorsement implied; publications must cite F. Maxwell "
    "Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and Context. ACM "
    "Transactions on Interactive Intelligent Systems (TiiS) 5, 4: 19:1-19:19. "
    "https://doi.org/10.1145/2827872. The data is read at run time from the user's copy and is "
    "never copied into the edgewise repository."
)
RECBOLE_PIN = "recbole==1.2.1"

INTERACTION_ROLES = ("user", "item", "timestamp", "rating", "watch_time", "item_duration", "disliked")
REQUIRED_ROLES = ("user", "item", "timestamp")
ITEM_ROLES = ("item", "title", "category", "description", "duration")
ON_BAD_ROWS = ("error", "skip")
MAX_LISTED = 10
PACKED_KEY_LIMIT = 2**62  # users x distinct timestamps below this: one argsort on a packed key
TRUE_WORDS = {"1", "true", "t", "yes", "y"}
FALSE_WORDS = {"0", "false", "f", "no", "n", ""}


# --- reading tables --------------------------------------------------------------------------
@dataclass
class Table:
    """A table as read: its frame (every column as text or as stored in Parquet), the row number
    of each record as shown to the user, and what was dropped as blank."""

    path: Path
    frame: Any  # pandas.DataFrame
    rows: np.ndarray  # int64: row number in the file of each frame row
    blank_lines: int = 0


def _drop_blank(table: Table) -> Table:
    import pandas as pd

    frame = table.frame
    if frame.shape[1] == 0 or len(frame) == 0:
        return table
    blank = np.ones(len(frame), dtype=bool)
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_string_dtype(s) or s.dtype == object:
            blank &= (s.isna() | (s.astype("str").str.strip() == "")).to_numpy()
        else:
            blank &= s.isna().to_numpy()
    if not blank.any():
        return table
    keep = ~blank
    return Table(table.path, frame[keep].reset_index(drop=True), table.rows[keep], int(blank.sum()))


def read_table(path: str | os.PathLike) -> Table:
    """A CSV (``.tsv``: tab-separated) or Parquet (``.parquet``/``.pq``) file with a header.

    CSV columns are read as text (ids keep their leading zeros; the checks below parse numbers);
    entirely blank lines are dropped and counted, and rows are numbered as lines of the file (the
    header is row 1). Parquet keeps its column types; its rows are numbered from 1. An empty,
    unreadable or header-only file is a DataError."""
    import pandas as pd

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises its own exception types for corrupt files
            raise DataError(f"{path}: cannot read as Parquet: {exc}") from None
        rows = np.arange(1, len(frame) + 1, dtype=np.int64)  # no header line: row 1 is the first record
    else:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        frame = _read_rows(path, path, sep=sep, encoding="utf-8-sig", what="CSV")
        if frame is None or len(frame) == 0:
            raise DataError(f"{path}: empty file; expected a header line naming the columns")
        header = [str(c).strip() for c in frame.iloc[0]]
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise DataError(f"{path}: column name(s) {', '.join(map(repr, repeated))} appear more than once")
        frame = frame.iloc[1:].reset_index(drop=True)
        frame.columns = header
        rows = np.arange(2, len(frame) + 2, dtype=np.int64)  # row 1 is the header
    frame.columns = [str(c).strip() for c in frame.columns]
    table = _drop_blank(Table(path, frame, rows))
    if len(table.frame) == 0:
        raise DataError(f"{path}: no data rows (columns: {', '.join(table.frame.columns) or 'none'})")
    return table


def _read_rows(
    path: Path, source: Any, *, sep: str, encoding: str, what: str, quoting: int = csv.QUOTE_MINIMAL,
    dtypes: dict[int, Any] | None = None, skiprows: int = 0,
) -> Any:  # fmt: skip
    """Every line of a delimited file as a row of a frame with numbered columns: text (empty cells
    as "", blank lines as empty rows, so row numbers match the file), or ``dtypes`` when given (then
    None if a value does not parse, for the caller to read again as text and name the rows). A line
    with more fields than the first is a DataError that names it; None for an empty file."""
    import pandas as pd

    options = dict(sep=sep, header=None, encoding=encoding, quoting=quoting, skiprows=skiprows,
                   skip_blank_lines=False)  # fmt: skip
    try:
        if dtypes is not None:
            try:
                return pd.read_csv(source, dtype=dtypes, **options)
            except (ValueError, pd.errors.ParserError):
                if hasattr(source, "seek"):
                    source.seek(0)
                return None
        return pd.read_csv(source, dtype=str, keep_default_na=False, **options)
    except pd.errors.EmptyDataError:
        return None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot parse as {what}: {str(exc).strip()}") from None
    except UnicodeDecodeError as exc:
        name = "UTF-8" if encoding.startswith("utf-8") else encoding
        raise DataError(f"{path}: not {name} text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _name_columns(path: Path, frame: Any, names: list[str]) -> Any:
    if frame.shape[1] != len(names):
        raise DataError(
            f"{path}: expected {len(names)} fields per line ({', '.join(names)}), found {frame.shape[1]}"
        )
    frame.columns = names
    return frame


def _read_delimited(
    path: Path, names: list[str], *, sep: str, encoding: str, dtypes: dict[str, Any] | None, skip_header: bool
) -> Table:
    """A headerless (or fixed-header) MovieLens file; ``dtypes`` is the fast path, text the fallback.

    A multi-character separator (``::``) is turned into a tab first, so the C parser reads it."""

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise DataError(f"{path}: empty file")
    if encoding == "auto":  # MovieLens movie files: UTF-8 in recent releases, Latin-1 in old ones
        try:
            raw.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding = "latin-1"
    if len(sep) > 1:
        raw, sep = raw.replace(sep.encode(), b"\t"), "\t"
    common = dict(sep=sep, encoding=encoding, what="MovieLens file", skiprows=1 if skip_header else 0,
                  quoting=csv.QUOTE_MINIMAL if sep == "," else csv.QUOTE_NONE)  # fmt: skip
    frame = None
    if dtypes:
        by_position = {names.index(k): v for k, v in dtypes.items()}
        frame = _read_rows(path, io.BytesIO(raw), dtypes=by_position, **common)
    if frame is None:  # something is not a number: read as text so the checks can name the rows
        frame = _read_rows(path, io.BytesIO(raw), **common)
    if frame is None:
        raise DataError(f"{path}: empty file")
    frame = _name_columns(path, frame, names)
    first = 2 if skip_header else 1
    table = _drop_blank(Table(path, frame, np.arange(first, len(frame) + first, dtype=np.int64)))
    if len(table.frame) == 0:
        raise DataError(f"{path}: no data rows")
    return table


# --- checking values -------------------------------------------------------------------------
class RowChecks:
    """Collects, column by column, which rows are bad and why; then refuses or drops them."""

    def __init__(self, table: Table):
        self.table = table
        self.checks: list[tuple[str, np.ndarray, Callable[[int], str]]] = []

    def add(self, column: str, bad: np.ndarray, reason: Callable[[int], str]) -> None:
        if bad.any():
            self.checks.append((column, bad, reason))

    def bad(self) -> np.ndarray:
        out = np.zeros(len(self.table.frame), dtype=bool)
        for _, mask, _ in self.checks:
            out |= mask
        return out

    def describe(self, index: int) -> str:
        for column, mask, reason in self.checks:
            if mask[index]:
                return f"row {self.table.rows[index]}, column '{column}': {reason(index)}"
        return f"row {self.table.rows[index]}"

    def resolve(self, on_bad_rows: str) -> tuple[np.ndarray, int]:
        """The mask of rows to keep and how many were dropped; a DataError listing them if refused."""
        bad = self.bad()
        n_bad = int(bad.sum())
        if n_bad and on_bad_rows == "error":
            listed = [self.describe(int(i)) for i in np.flatnonzero(bad)[:MAX_LISTED]]
            path = self.table.path
            hint = "fix them, or drop them with --on-bad-rows skip (on_bad_rows='skip')"
            if n_bad == 1:
                raise DataError(f"{path}: {listed[0]}; {hint}")
            head = f"{path}: {n_bad} bad rows" + (f" (the first {MAX_LISTED})" if n_bad > MAX_LISTED else "")
            raise DataError(head + f"; {hint}:\n  " + "\n  ".join(listed))
        return ~bad, n_bad


def _text(series) -> Any:
    """A column as stripped text (missing values as "")."""
    return series.astype("str").where(series.notna(), "").str.strip()


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _shown(value: Any) -> str:
    text = repr(str(value))
    return text if len(text) <= 40 else text[:37] + "...'"


def check_ids(series, column: str, checks: RowChecks, what: str) -> np.ndarray:
    """Ids as given (integers stay integers, anything else becomes stripped text); empty is bad."""
    if _is_numeric(series):
        bad = series.isna().to_numpy()
        values = series.to_numpy()
        if bad.any() or values.dtype.kind == "f":
            whole = np.where(bad, 0, values)
            if np.all(whole == np.round(whole)):
                values = whole.astype(np.int64)
        checks.add(column, bad, lambda i: f"empty {what} id")
        return values
    text = _text(series)
    checks.add(column, (text == "").to_numpy(), lambda i: f"empty {what} id")
    return text.to_numpy(dtype=object)


def check_numbers(
    series, column: str, checks: RowChecks, what: str, *, minimum: float | None = None,
    positive: bool = False, allow_empty: bool = False,
) -> np.ndarray:  # fmt: skip
    """float64 values; a non-number, an empty cell (unless allowed, then NaN) or one below the
    bounds is bad."""
    import pandas as pd

    if _is_numeric(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        empty = np.isnan(values)
        not_number = np.isinf(values)
        raw = series.to_numpy()
    else:
        text = _text(series)
        raw = text.to_numpy(dtype=object)
        empty = (text == "").to_numpy()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        not_number = ~np.isfinite(values) & ~empty
    bad_empty = empty if not allow_empty else np.zeros_like(empty)
    checks.add(column, bad_empty, lambda i: f"empty {what}")
    checks.add(column, not_number, lambda i: f"{what} is not a number: {_shown(raw[i])}")
    with np.errstate(invalid="ignore"):
        if positive:
            checks.add(column, values <= 0, lambda i: f"{what} must be positive, got {values[i]:g}")
        elif minimum is not None:
            checks.add(column, values < minimum, lambda i: f"negative {what}: {values[i]:g}")
    return values


def check_timestamps(series, column: str, checks: RowChecks) -> np.ndarray:
    """int64 epoch seconds from numbers (epoch seconds) or ISO 8601 text (naive times are UTC)."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series):
        dt = pd.to_datetime(series, utc=True)
        bad = dt.isna().to_numpy()
        seconds = ((dt - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        checks.add(column, bad, lambda i: "empty timestamp")
        return np.where(bad, 0, seconds).astype(np.int64)
    if _is_numeric(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        checks.add(column, np.isnan(values), lambda i: "empty timestamp")
        checks.add(column, np.isinf(values), lambda i: "timestamp is not finite")
        return _epoch_seconds(values, column, checks)
    text = _text(series)
    raw = text.to_numpy(dtype=object)
    empty = (text == "").to_numpy()
    values = np.array(pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))
    rest = ~np.isfinite(values) & ~empty
    if rest.any():
        dt = pd.to_datetime(text[rest], errors="coerce", utc=True, format="ISO8601")
        seconds = ((dt - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        values[rest] = seconds
    not_time = ~np.isfinite(values) & ~empty
    checks.add(column, empty, lambda i: "empty timestamp")
    checks.add(
        column, not_time, lambda i: f"timestamp is neither epoch seconds nor an ISO date: {_shown(raw[i])}"
    )
    return _epoch_seconds(values, column, checks)


def _epoch_seconds(values: np.ndarray, column: str, checks: RowChecks) -> np.ndarray:
    """Whole seconds; beyond 2**53 (not representable exactly, and no real epoch time) is bad."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        huge = finite & (np.abs(values) >= 2.0**53)
    checks.add(column, huge, lambda i: f"timestamp {values[i]:g} is out of range for epoch seconds")
    return np.where(finite & ~huge, np.floor(values), 0).astype(np.int64)


def check_flags(series, column: str, checks: RowChecks, what: str) -> np.ndarray:
    """Booleans from true/false, yes/no, 1/0 (empty is false)."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return series.fillna(False).to_numpy(dtype=bool)
    if _is_numeric(series):
        text = series.astype("str").where(series.notna(), "").str.replace(r"\.0$", "", regex=True)
    else:
        text = _text(series).str.lower()
    raw = text.to_numpy(dtype=object)
    true = text.isin(TRUE_WORDS).to_numpy()
    bad = ~true & ~text.isin(FALSE_WORDS).to_numpy()
    checks.add(column, bad, lambda i: f"{what} must be true/false, yes/no or 1/0, got {_shown(raw[i])}")
    return true


# --- ids -------------------------------------------------------------------------------------
def factorize_ids(values: np.ndarray, keep: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """int32 codes of ``values[keep]`` and the id of each code, in natural order (numeric when all
    are numbers); ids that occur only outside ``keep`` are left out."""
    codes, uniques = _factorize_raw(values)
    return _natural_codes(codes if keep is None else codes[keep], uniques)


def _natural_codes(codes: np.ndarray, uniques: np.ndarray) -> tuple[np.ndarray, list[str]]:
    used = np.bincount(codes, minlength=len(uniques)) > 0
    if not used.all():
        codes = (np.cumsum(used) - 1)[codes]
        uniques = uniques[used]
    if uniques.dtype.kind in "iuf":
        perm = np.argsort(uniques, kind="stable")
        ids = _id_strings(uniques[perm])
    else:
        text = [str(x) for x in uniques]
        ids = natural_order(text)
        position = {x: k for k, x in enumerate(text)}
        perm = np.asarray([position[x] for x in ids], dtype=np.int64)
    rank = np.empty(len(uniques), dtype=np.int32)
    rank[perm] = np.arange(len(uniques), dtype=np.int32)
    return rank[codes], ids


def _id_strings(uniques: np.ndarray) -> list[str]:
    if uniques.dtype.kind in "iu":
        return [str(int(x)) for x in uniques]
    return [str(x) for x in uniques]


# --- item tables -----------------------------------------------------------------------------
@dataclass
class ItemTable:
    """Items in table order: ids, text fields, durations (NaN where unknown) or None."""

    path: Path
    ids: list[str]
    fields: dict[str, list[str]]
    duration: np.ndarray | None
    bad_rows_skipped: int = 0


def items_from_frame(table: Table, names: Mapping[str, str], on_bad_rows: str) -> ItemTable:
    """``names`` maps each role present (item, title, category, description, duration) to its
    column in ``table.frame``. A duplicate or empty item id and a duration that is not a positive
    number are bad rows."""
    import pandas as pd

    frame = table.frame
    checks = RowChecks(table)
    ids = check_ids(frame[names["item"]], names["item"], checks, "item")
    id_text = pd.Series(_id_strings(ids) if ids.dtype.kind in "iuf" else ids, dtype=object)
    dup = id_text.duplicated(keep="first").to_numpy() & (id_text != "").to_numpy()
    first_row = dict(zip(id_text[~dup], table.rows[~dup]))
    checks.add(
        names["item"],
        dup,
        lambda i: f"duplicate item id {_shown(id_text[i])} (first at row {first_row[id_text[i]]})",
    )
    duration = None
    if "duration" in names:
        duration = check_numbers(
            frame[names["duration"]], names["duration"], checks, "duration", positive=True, allow_empty=True
        )
    keep, n_bad = checks.resolve(on_bad_rows)
    fields = {}
    for role in ("title", "category", "description"):
        if role in names:
            fields[role] = _text(frame[names[role]])[keep].tolist()
    return ItemTable(
        path=table.path,
        ids=id_text[keep].tolist(),
        fields=fields,
        duration=None if duration is None else duration[keep].astype(np.float32),
        bad_rows_skipped=n_bad,
    )


# --- interactions ----------------------------------------------------------------------------
def interactions_from_frame(
    table: Table,
    names: Mapping[str, str],
    *,
    on_bad_rows: str = "error",
    items: ItemTable | None = None,
    meta: dict[str, Any] | None = None,
) -> RecDataset:
    """Check, clean and index an interaction table. ``names`` maps each role present (user, item,
    timestamp, rating, watch_time, item_duration, disliked) to its column in ``table.frame``.

    Rows on items missing from ``items`` are bad rows; without ``items``, the items are those
    interacted with, in natural id order. Users are those left with an interaction."""
    if on_bad_rows not in ON_BAD_ROWS:
        raise ConfigError(f"on_bad_rows must be one of {', '.join(ON_BAD_ROWS)}, got {on_bad_rows!r}")
    checks = RowChecks(table)
    values = _check_interactions(table.frame, names, checks)
    users, item_values, timestamp = values.pop("user"), values.pop("item"), values.pop("timestamp")
    row_duration = values.pop("item_duration", None)
    optional = values  # rating, watch_time, disliked

    item_codes, item_uniques = _factorize_raw(item_values)
    if items is not None:
        where = _index_of(items.ids, _id_strings(item_uniques))
        missing = where[item_codes] < 0
        checks.add(
            names["item"],
            missing,
            lambda i: f"item {_shown(item_values[i])} is not in the item table {items.path}",
        )
    keep, n_bad = checks.resolve(on_bad_rows)
    if not keep.any():
        raise DataError(f"{table.path}: no interactions left after dropping {n_bad} bad rows")
    if items is not None:
        item = where[item_codes[keep]].astype(np.int32)
        item_ids = list(items.ids)
    else:
        item, item_ids = _natural_codes(item_codes[keep], item_uniques)
    user, user_ids = factorize_ids(users, keep)
    timestamp = timestamp[keep]

    # one sort by (user, time, file order); duplicates (same user, item, time) keep their first row
    order, n_dup, n_late = time_order(user, item, timestamp)
    rows = table.rows[keep][order]
    optional = {k: v[keep][order] for k, v in optional.items()}
    if row_duration is not None:
        row_duration = row_duration[keep][order]
    user, item, timestamp = user[order], item[order], timestamp[order]

    item_duration = _item_durations(table.path, item, len(item_ids), item_ids, rows, row_duration, items)
    cleaning = {
        "rows_read": int(len(table.frame)) + table.blank_lines,
        "blank_lines": table.blank_lines,
        "bad_rows_skipped": n_bad,
        "duplicates_dropped": n_dup,
        "out_of_order": n_late,
        "interactions": int(len(user)),
    }
    if items is not None:
        cleaning["item_table_bad_rows_skipped"] = items.bad_rows_skipped
        cleaning["items_without_interactions"] = int(
            np.count_nonzero(np.bincount(item, minlength=len(item_ids)) == 0)
        )
    return RecDataset(
        user_ids=user_ids,
        item_ids=item_ids,
        user=user,
        item=item,
        timestamp=timestamp,
        item_duration=item_duration,
        item_fields=dict(items.fields) if items is not None else {},
        meta={**(meta or {}), "cleaning": cleaning},
        source=str(table.path),
        **optional,
    )


def _check_interactions(frame: Any, names: Mapping[str, str], checks: RowChecks) -> dict[str, np.ndarray]:
    """Each role's values (ids as given, epoch seconds, floats, flags); bad cells go to ``checks``."""
    values = {
        "user": check_ids(frame[names["user"]], names["user"], checks, "user"),
        "item": check_ids(frame[names["item"]], names["item"], checks, "item"),
        "timestamp": check_timestamps(frame[names["timestamp"]], names["timestamp"], checks),
    }
    if "rating" in names:
        values["rating"] = check_numbers(frame[names["rating"]], names["rating"], checks, "rating")
    if "watch_time" in names:
        values["watch_time"] = check_numbers(
            frame[names["watch_time"]], names["watch_time"], checks, "watch time", minimum=0.0
        )
    if "disliked" in names:
        values["disliked"] = check_flags(frame[names["disliked"]], names["disliked"], checks, "disliked")
    if "item_duration" in names:  # empty: unknown here (another row or the item table may give it)
        values["item_duration"] = check_numbers(
            frame[names["item_duration"]], names["item_duration"], checks, "item duration",
            positive=True, allow_empty=True,
        )  # fmt: skip
    return values


def _factorize_raw(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    codes, uniques = pd.factorize(values)
    return codes, np.asarray(uniques)


def _index_of(table_ids: list[str], ids: list[str]) -> np.ndarray:
    """Position of each id in ``table_ids`` (-1 where absent)."""
    import pandas as pd

    return np.asarray(pd.Index(table_ids).get_indexer(ids), dtype=np.int64)


def time_order(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The row order (user, timestamp, file order) without duplicate (user, item, timestamp) rows
    (the first in the file stays), how many duplicates were dropped, and how many of the remaining
    rows come in the file after a later interaction of the same user (out of time order).

    One sort on a packed (user, timestamp rank) key; the rest is linear."""
    import pandas as pd

    n = len(user)
    if n == 0:
        return np.zeros(0, np.int64), 0, 0
    distinct, rank = np.unique(timestamp, return_inverse=True)
    n_users = int(user.max()) + 1
    if n_users * len(distinct) < PACKED_KEY_LIMIT:
        order = np.argsort(user.astype(np.int64) * len(distinct) + rank, kind="stable")
    else:
        order = np.lexsort((np.arange(n), timestamp, user))
    su, st = user[order], timestamp[order]
    starts = np.ones(n, dtype=bool)  # first row of each (user, timestamp) group
    starts[1:] = (su[1:] != su[:-1]) | (st[1:] != st[:-1])
    group = np.cumsum(starts) - 1
    shared = np.bincount(group)[group] > 1
    n_dup = 0
    if shared.any():  # the same item twice in a (user, timestamp) group: a duplicate
        idx = np.flatnonzero(shared)
        dup = pd.DataFrame({"g": group[idx], "i": item[order][idx]}).duplicated(keep="first").to_numpy()
        if dup.any():
            n_dup = int(dup.sum())
            keep = np.ones(n, dtype=bool)
            keep[idx[dup]] = False
            order, su, st = order[keep], su[keep], st[keep]
            starts = np.ones(len(order), dtype=bool)
            starts[1:] = (su[1:] != su[:-1]) | (st[1:] != st[:-1])
    # out of time order: a row is late when some row of the same user with a later timestamp
    # comes before it in the file. value = user * n + file position grows from user to user, so a
    # suffix minimum over the later (user, timestamp) groups never reaches into another user.
    value = su.astype(np.int64) * n + order
    first = np.flatnonzero(starts)
    group_min = np.minimum.reduceat(value, first)
    later_min = np.empty_like(group_min)
    later_min[-1] = np.iinfo(np.int64).max
    later_min[:-1] = np.minimum.accumulate(group_min[::-1])[::-1][1:]
    late = value > later_min[np.cumsum(starts) - 1]
    return order, n_dup, int(np.count_nonzero(late))


def count_out_of_order(user: np.ndarray, timestamp: np.ndarray) -> int:
    """Rows (in file order) that come after a later interaction of the same user."""
    return time_order(np.asarray(user), np.arange(len(user)), np.asarray(timestamp))[2]  # no duplicates


def _item_durations(
    path: Path,
    item: np.ndarray,
    n_items: int,
    item_ids: list[str],
    rows: np.ndarray,
    row_duration: np.ndarray | None,
    items: ItemTable | None,
) -> np.ndarray | None:
    """One duration per item, from the item table and/or the interaction rows; conflicting values
    or items left without one (when some have one) are DataErrors."""
    duration = None if items is None or items.duration is None else items.duration.astype(np.float64)
    if row_duration is not None:
        known = np.isfinite(row_duration)
        lo = np.full(n_items, np.inf)
        hi = np.full(n_items, -np.inf)
        np.minimum.at(lo, item[known], row_duration[known])
        np.maximum.at(hi, item[known], row_duration[known])
        seen = np.isfinite(lo)
        conflict = seen & (hi - lo > 1e-6 * np.maximum(1.0, hi))
        if conflict.any():
            i = int(np.flatnonzero(conflict)[0])
            on_i = known & (item == i)
            r_lo = rows[on_i][np.argmin(row_duration[on_i])]
            r_hi = rows[on_i][np.argmax(row_duration[on_i])]
            raise DataError(
                f"{path}: item {item_ids[i]!r} has conflicting durations: {lo[i]:g} s at row {r_lo} and "
                f"{hi[i]:g} s at row {r_hi} (an item has one duration; n={int(conflict.sum())} items conflict)"
            )
        if duration is None:
            duration = np.where(seen, lo, np.nan)
        else:
            clash = seen & np.isfinite(duration) & (np.abs(duration - lo) > 1e-6 * np.maximum(1.0, lo))
            if clash.any():
                i = int(np.flatnonzero(clash)[0])
                raise DataError(
                    f"{path}: item {item_ids[i]!r} has duration {lo[i]:g} s here but {duration[i]:g} s "
                    f"in the item table {items.path}"
                )
            duration = np.where(np.isfinite(duration), duration, lo)
            duration[~np.isfinite(duration)] = np.nan
    if duration is None:
        return None
    unknown = ~np.isfinite(duration)
    if unknown.any():
        names = ", ".join(repr(item_ids[i]) for i in np.flatnonzero(unknown)[:5])
        raise DataError(
            f"{path}: {int(unknown.sum())} of {n_items} items have no duration (e.g. {names}); every item "
            "needs one when durations are given (add them to the item table's duration column)"
        )
    return duration.astype(np.float32)


# --- column names ----------------------------------------------------------------------------
def parse_columns(text: str | None) -> dict[str, str]:
    """``"user=customer_id,item=sku"`` -> ``{"user": "customer_id", "item": "sku"}``."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        role, sep, name = part.partition("=")
        if not sep or not role.strip() or not name.strip():
            raise ConfigError(f"--columns: expected ROLE=COLUMN pairs separated by commas, got {part!r}")
        out[role.strip()] = name.strip()
    return out


def resolve_columns(
    table: Table, columns: Mapping[str, str], roles: tuple[str, ...], required: tuple[str, ...]
) -> dict[str, str]:
    """Role -> column of ``table`` (the mapped name, else the role's own name); a missing required
    column is a DataError naming the columns found."""
    unknown = sorted(set(columns) - set(INTERACTION_ROLES) - set(ITEM_ROLES))
    if unknown:
        raise ConfigError(
            f"columns: unknown role(s) {', '.join(map(repr, unknown))}; expected among "
            f"{', '.join(dict.fromkeys(INTERACTION_ROLES + ITEM_ROLES))}"
        )
    present = list(table.frame.columns)
    names = {}
    for role in roles:
        mapped = columns.get(role)
        if mapped is not None and mapped in present:
            names[role] = mapped
        elif mapped is not None and role != "item":  # the item column's mapping may name one file only
            raise DataError(
                f"{table.path}: no column {mapped!r} (given for {role}); columns found: {', '.join(present)}"
            )
        elif role in present:
            names[role] = role
    missing = [r for r in required if r not in names]
    if missing:
        wanted = ", ".join(repr(columns.get(r, r)) for r in missing)
        raise DataError(
            f"{table.path}: missing required column(s) {wanted}; columns found: {', '.join(present)} "
            "(map other names with --columns user=...,item=...,timestamp=...)"
        )
    return names


def load_interactions(
    path: str | os.PathLike,
    items: str | os.PathLike | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    on_bad_rows: str = "error",
) -> RecDataset:
    """A user's interactions (CSV or Parquet) and, optionally, their item table.

    Interaction columns: user, item, timestamp (epoch seconds or ISO 8601) required; rating,
    watch_time (seconds, >= 0), item_duration (seconds, one value per item), disliked optional.
    Item table columns: item required; title, category, description, duration optional. Items
    in the table that nobody interacted with are kept (they are candidates). ``columns`` maps a
    role to the file's column name (``{"user": "customer_id"}``), in both files."""
    if on_bad_rows not in ON_BAD_ROWS:
        raise ConfigError(f"on_bad_rows must be one of {', '.join(ON_BAD_ROWS)}, got {on_bad_rows!r}")
    columns = dict(columns or {})
    item_table = None
    if items is not None:
        table = read_table(items)
        names = resolve_columns(table, columns, ITEM_ROLES, ("item",))
        item_table = items_from_frame(table, names, on_bad_rows)
    table = read_table(path)
    names = resolve_columns(table, columns, INTERACTION_ROLES, REQUIRED_ROLES)
    meta = {
        "source": "interactions",
        "origin": str(Path(path).expanduser().absolute()),
        "items_origin": None if items is None else str(Path(items).expanduser().absolute()),
        "columns": names,
    }
    return interactions_from_frame(table, names, on_bad_rows=on_bad_rows, items=item_table, meta=meta)


# --- RecBole atomic files ----------------------------------------------------------------------
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
TITLE_FIELDS = ("movie_title", "title", "item_name", "name")
CATEGORY_FIELDS = ("class", "genre", "genres", "category", "categories")
DESCRIPTION_FIELDS = ("description", "desc", "plot", "overview")


def read_atomic_file(path: str | os.PathLike) -> tuple[Table, dict[str, str]]:
    """A RecBole atomic file: a table whose columns are the field names (``user_id``...) as text,
    and each field's type (``token``, ``token_seq``, ``float``, ``float_seq``) from the header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if not header.strip():
        raise DataError(f"{path}: empty file; expected a header of name:type fields")
    names, types = [], {}
    for k, column in enumerate(header.split("\t"), 1):
        name, sep, kind = column.strip().partition(":")
        if not sep or kind not in ATOMIC_TYPES or not name:
            raise DataError(
                f"{path}: header column {k} is {column!r}; expected name:type with type one of "
                f"{', '.join(ATOMIC_TYPES)}"
            )
        names.append(name)
        types[name] = kind
    frame = _read_rows(
        path, path, sep="\t", encoding="utf-8", what="a RecBole atomic file", quoting=csv.QUOTE_NONE
    )
    frame = _name_columns(path, frame.iloc[1:].reset_index(drop=True), names)
    table = _drop_blank(Table(path, frame, np.arange(2, len(frame) + 2, dtype=np.int64)))
    if len(table.frame) == 0:
        raise DataError(f"{path}: no data rows")
    return table, types


def _first_present(names: Mapping[str, str], candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in names), None)


def load_recbole_atomic(
    folder: str | os.PathLike,
    name: str | None = None,
    *,
    on_bad_rows: str = "error",
    meta: dict[str, Any] | None = None,
) -> RecDataset:
    """``FOLDER/NAME.inter`` (user_id, item_id, timestamp, optional rating) and, when present,
    ``FOLDER/NAME.item`` (item_id and a title, category and description field if it has them)."""
    folder = Path(folder)
    name = name or folder.name
    inter_path = folder / f"{name}.inter"
    table, types = read_atomic_file(inter_path)
    found = ", ".join(f"{k}:{v}" for k, v in types.items())
    for field in ("user_id", "item_id", "timestamp"):
        if field not in types:
            raise DataError(f"{inter_path}: no '{field}' field; fields found: {found}")
    names = {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}
    if "rating" in types:
        names["rating"] = "rating"
    items = None
    item_path = folder / f"{name}.item"
    if item_path.is_file():
        item_table, item_types = read_atomic_file(item_path)
        if "item_id" not in item_types:
            raise DataError(f"{item_path}: no 'item_id' field; fields found: {', '.join(item_types)}")
        frame = item_table.frame
        roles = {"item": "item_id"}
        title = _first_present(item_types, TITLE_FIELDS)
        if title:
            text = _text(frame[title])
            year = _first_present(item_types, ("release_year", "year"))
            if year:
                y = _text(frame[year])
                text = text.where((y == "") | text.str.endswith(")"), text + " (" + y + ")")
            frame = frame.assign(**{title: text})
            roles["title"] = title
        category = _first_present(item_types, CATEGORY_FIELDS)
        if category:
            if item_types[category] == "token_seq":
                frame = frame.assign(**{category: _text(frame[category]).str.split().str.join(", ")})
            roles["category"] = category
        description = _first_present(item_types, DESCRIPTION_FIELDS)
        if description:
            roles["description"] = description
        items = items_from_frame(
            Table(item_path, frame, item_table.rows, item_table.blank_lines), roles, on_bad_rows
        )
    meta = {"source": name, "format": "recbole-atomic", "origin": str(folder.absolute()), **(meta or {})}
    return interactions_from_frame(table, names, on_bad_rows=on_bad_rows, items=items, meta=meta)


def recbole_dataset_dir(name: str = "ml-100k") -> Path:
    """The folder of a data set the ``recbole`` package ships, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise MissingDependencyError(
            f"the {name} data set is read from the copy the recbole package ships, and recbole is not "
            f"installed: pip install --no-deps {RECBOLE_PIN}"
        )
    folder = Path(spec.origin).parent / "dataset_example" / name
    if not (folder / f"{name}.inter").is_file():
        raise MissingDependencyError(
            f"{folder}: recbole is installed but has no {name}.inter there; reinstall it: "
            f"pip install --no-deps --force-reinstall {RECBOLE_PIN}"
        )
    return folder


def load_ml100k(*, on_bad_rows: str = "error") -> RecDataset:
    """MovieLens-100K (943 users, 1682 items, 100,000 ratings) from RecBole's copy, read in place."""
    folder = recbole_dataset_dir("ml-100k")
    from importlib.metadata import PackageNotFoundError, version

    try:
        copy = f"recbole {version('recbole')}"
    except PackageNotFoundError:
        copy = "recbole"
    meta = {"source": "ml-100k", "licence": MOVIELENS_LICENCE, "origin": str(folder), "copy": copy}
    return load_recbole_atomic(folder, "ml-100k", on_bad_rows=on_bad_rows, meta=meta)


# --- MovieLens directories ---------------------------------------------------------------------
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
ML_LAYOUTS = {
    "ml-100k": ("u.data", "u.item"),
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-20m": ("ratings.csv", "movies.csv"),
}
RATING_NAMES = ["user", "item", "rating", "timestamp"]
RATING_DTYPES = {"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64}


def detect_movielens(root: Path) -> str:
    """The layout of a MovieLens directory: ``ml-100k``, ``ml-1m`` (also ml-10m) or ``ml-20m``
    (also ml-25m, ml-32m, ml-latest)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    for layout, (ratings, _) in ML_LAYOUTS.items():
        if (root / ratings).is_file():
            return layout
    expected = "; ".join(f"{a} + {b} ({k})" for k, (a, b) in ML_LAYOUTS.items())
    raise DataError(f"{root}: not a MovieLens directory edgewise reads: expected {expected}")


def _genre_names(root: Path) -> tuple[str, ...]:
    path = root / "u.genre"
    if not path.is_file():
        return ML100K_GENRES
    lines = [ln.split("|")[0] for ln in path.read_text(encoding="latin-1").splitlines() if ln.strip()]
    return tuple(lines) if len(lines) == len(ML100K_GENRES) else ML100K_GENRES


def _ml100k_items(root: Path, on_bad_rows: str) -> ItemTable:
    genres = _genre_names(root)
    names = ["item", "title", "release_date", "video_release_date", "url", *genres]
    table = _read_delimited(root / "u.item", names, sep="|", encoding="auto", dtypes=None, skip_header=False)
    frame = table.frame
    flags = np.stack([(_text(frame[g]) == "1").to_numpy() for g in genres], axis=1)
    category = [", ".join(g for g, on in zip(genres, row) if on) for row in flags]
    frame = frame.assign(category=category)
    return items_from_frame(Table(table.path, frame, table.rows, table.blank_lines),
                            {"item": "item", "title": "title", "category": "category"}, on_bad_rows)  # fmt: skip


def _movies_items(path: Path, *, sep: str, encoding: str, header: bool, on_bad_rows: str) -> ItemTable:
    table = _read_delimited(
        path, ["item", "title", "genres"], sep=sep, encoding=encoding, dtypes=None, skip_header=header
    )
    genres = _text(table.frame["genres"])
    category = genres.where(genres != "(no genres listed)", "").str.replace("|", ", ", regex=False)
    frame = table.frame.assign(category=category)
    return items_from_frame(Table(table.path, frame, table.rows, table.blank_lines),
                            {"item": "item", "title": "title", "category": "category"}, on_bad_rows)  # fmt: skip


def load_movielens(path: str | os.PathLike, *, on_bad_rows: str = "error") -> RecDataset:
    """A MovieLens directory in any of its published layouts (detected), with movie titles and
    genres as item fields. Ratings on movies missing from the movies file are bad rows."""
    root = Path(path).expanduser()
    layout = detect_movielens(root)
    ratings, movies = ML_LAYOUTS[layout]
    items = None
    if layout == "ml-100k":
        table = _read_delimited(root / ratings, RATING_NAMES, sep="\t", encoding="latin-1",
                                dtypes=RATING_DTYPES, skip_header=False)  # fmt: skip
        if (root / movies).is_file():
            items = _ml100k_items(root, on_bad_rows)
    elif layout == "ml-1m":
        table = _read_delimited(root / ratings, RATING_NAMES, sep="::", encoding="latin-1",
                                dtypes=RATING_DTYPES, skip_header=False)  # fmt: skip
        if (root / movies).is_file():
            items = _movies_items(
                root / movies, sep="::", encoding="auto", header=False, on_bad_rows=on_bad_rows
            )
    else:
        _check_csv_header(root / ratings, ("userId", "movieId", "rating", "timestamp"))
        table = _read_delimited(root / ratings, RATING_NAMES, sep=",", encoding="utf-8",
                                dtypes=RATING_DTYPES, skip_header=True)  # fmt: skip
        if (root / movies).is_file():
            _check_csv_header(root / movies, ("movieId", "title", "genres"))
            items = _movies_items(
                root / movies, sep=",", encoding="utf-8", header=True, on_bad_rows=on_bad_rows
            )
    name = root.name if re.fullmatch(r"ml-[\w.-]+", root.name) else layout
    meta = {"source": name, "format": f"movielens ({layout} layout)", "origin": str(root.absolute()),
            "licence": MOVIELENS_LICENCE}  # fmt: skip
    names = {r: r for r in RATING_NAMES}
    return interactions_from_frame(table, names, on_bad_rows=on_bad_rows, items=items, meta=meta)


def _check_csv_header(path: Path, expected: tuple[str, ...]) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = [c.strip() for c in fh.readline().strip().split(",")]
    if tuple(header[: len(expected)]) != expected:
        raise DataError(
            f"{path}: header is {','.join(header)!r}; expected {','.join(expected)} (MovieLens layout)"
        )
