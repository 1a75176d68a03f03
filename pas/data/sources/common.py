"""File reading, row locations and error helpers shared by the dataset loaders.

Every reader yields rows with the 1-based line where the row starts, so that a
DataError can name the file, the line and the field of a malformed row.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pas.data.schema import LETTERS, DataError, MCItem

log = logging.getLogger(__name__)

DATA_ROOT_ENV = "PAS_DATA_ROOT"
DEFAULT_ROW_FIX = "Fix or remove this row."
MAX_LISTED_ENTRIES = 40


@dataclass(frozen=True)
class Location:
    """The origin of a row: a file and the line where the row starts, or a dataset and a 0-based row index."""

    source: str
    line: int | None = None
    row: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.source}, line {self.line}"
        if self.row is not None:
            return f"{self.source}, row index {self.row}"
        return self.source


def shorten(value: object, limit: int = 120) -> str:
    """Return ``repr(value)``, cut to ``limit`` characters so that a long row value cannot flood a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def row_error(location: Location, field: str | None, problem: str, fix: str = DEFAULT_ROW_FIX) -> DataError:
    """Build the DataError for a malformed row: location, field, problem and fix in one message."""
    where = f"{location}: field {field!r}" if field else f"{location}:"
    return DataError(f"{where} {problem}. {fix}")


# ---------------------------------------------------------------------------
# Malformed rows: raise or skip

ON_ERROR_CHOICES = ("raise", "skip")
MAX_LOGGED_SKIPS = 20


@dataclass
class SkippedRows:
    """The rows a load skipped under ``data.on_error=skip``: how many, and the first messages."""

    on_error: str = "raise"
    count: int = 0
    messages: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.count += 1
        if self.count <= MAX_LOGGED_SKIPS:
            self.messages.append(message)
            log.warning("Skipped a malformed row (data.on_error=skip): %s", message)


_ROW_POLICY: ContextVar[SkippedRows | None] = ContextVar("pas_row_policy", default=None)


@contextmanager
def row_error_policy(on_error: str) -> Iterator[SkippedRows]:
    """Set what the loaders called inside the block do with a malformed row: "raise" or "skip".

    With "skip" each such row is logged and left out, and the yielded SkippedRows counts them.
    Problems that concern a whole file (a missing file, a missing CSV column, invalid JSON in a
    file that contains one JSON array) still raise.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise DataError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")
    skipped = SkippedRows(on_error)
    token = _ROW_POLICY.set(skipped)
    try:
        yield skipped
    finally:
        _ROW_POLICY.reset(token)
    if skipped.count > MAX_LOGGED_SKIPS:
        log.warning("Skipped %d malformed rows in all; the first %d are logged above", skipped.count, MAX_LOGGED_SKIPS)


class row_guard:  # noqa: N801 - used like a function: `with row_guard():`
    """Around the code that reads one row: under ``data.on_error=skip`` a DataError it raises is
    logged, counted and suppressed, so the loader goes on with the next row."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _traceback: TracebackType | None
    ) -> bool:
        policy = _ROW_POLICY.get()
        if policy is None or policy.on_error != "skip" or kind is None or not issubclass(kind, DataError):
            return False
        policy.add(str(error))
        return True


# ---------------------------------------------------------------------------
# Paths


def resolve_data_path(data_root: str | None, relative: str) -> Path:
    """Join a path inside the data root onto the data root (``~`` is expanded).

    Raises DataError when no data root is set. An absolute ``relative`` is returned as it is.
    """
    if data_root is None or not str(data_root).strip():
        raise DataError(
            f"Loading {relative!r} needs the data root: set the environment variable {DATA_ROOT_ENV} "
            "or pass data_root=/path/to/data (in a Hydra command: data_root=/path/to/data)."
        )
    return Path(str(data_root)).expanduser() / relative


def require_file(path: Path, data_root: str | None = None) -> Path:
    """Return ``path`` if it is a file, else raise DataError naming it and listing what exists nearby."""
    if path.is_file():
        return path
    if path.is_dir():
        raise DataError(f"Expected a data file but {path} is a folder. {_describe_folder(path)}")
    raise missing_path_error(path, data_root, "Data file")


def missing_path_error(path: Path, data_root: str | None, kind: str) -> DataError:
    """Build the DataError for a missing file or folder: the path, the nearest existing folder's contents, the fix."""
    message = f"{kind} not found: {path}."
    root = Path(str(data_root)).expanduser() if data_root is not None else None
    nearest = _nearest_existing_folder(path)
    # Without its data root, the nearest existing folder is some unrelated parent such as /tmp.
    if nearest is not None and (root is None or root.is_dir()):
        message += " " + _describe_folder(nearest)
    if root is not None:
        if not root.is_dir():
            message += f" The data root {root} does not exist."
        message += (
            f" Check the path, or point the data root elsewhere: set {DATA_ROOT_ENV} or pass data_root=/path/to/data."
        )
    return DataError(message)


def _nearest_existing_folder(path: Path) -> Path | None:
    for parent in path.parents:
        if parent.is_dir():
            return parent
    return None


def _describe_folder(folder: Path) -> str:
    entries = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    if not entries:
        return f"The folder {folder} is empty."
    listed = ", ".join(entries[:MAX_LISTED_ENTRIES])
    if len(entries) > MAX_LISTED_ENTRIES:
        listed += f" and {len(entries) - MAX_LISTED_ENTRIES} more"
    return f"The folder {folder} contains: {listed}."


def require_path_list(value: object, parameter: str) -> list[str]:
    """Check that a loader's ``files``-like parameter is a non-empty list of path strings."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise DataError(
            f"{parameter} must be a non-empty list of paths relative to the data root, got {shorten(value)}. "
            f"In YAML write for example {parameter}: [folder/file.jsonl]."
        )
    paths = list(value)
    for path in paths:
        if not isinstance(path, str) or not path.strip():
            raise DataError(f"{parameter} must contain path strings, got {path!r} in {paths!r}.")
    return paths


def resolve_data_files(data_root: str | None, files: object) -> list[Path]:
    """Resolve a list of file paths inside the data root and check that each file exists."""
    return [require_file(resolve_data_path(data_root, name), data_root) for name in require_path_list(files, "files")]


def require_choice(value: object, parameter: str, allowed: Sequence[str]) -> str:
    """Check that a string parameter is one of the allowed values."""
    if value not in allowed:
        options = ", ".join(repr(option) for option in allowed)
        raise DataError(f"{parameter} must be one of {options}, got {shorten(value)}.")
    return str(value)


# ---------------------------------------------------------------------------
# Reading files


def read_text(path: Path) -> str:
    """Read a file as UTF-8 (a leading byte-order mark is dropped).

    Undecodable bytes raise DataError naming the file and the line.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: byte {data[error.start : error.start + 1]!r} is not valid UTF-8 "
            f"({error.reason}). Save the file as UTF-8."
        ) from error
    return text.removeprefix("\ufeff")


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A JSON object with a repeated key would silently keep only the last value.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicate_keys)


def iter_jsonl(path: Path) -> Iterator[tuple[Location, dict[str, Any]]]:
    """Yield each non-blank line of a JSON Lines file as an object with its location."""
    # str.splitlines() would also split at U+2028 and other separators that JSON strings may contain.
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        location = Location(str(path), line=number)
        with row_guard():
            try:
                record = _DECODER.decode(line)
            except ValueError as error:
                raise row_error(location, None, f"invalid JSON: {error}") from error
            if not isinstance(record, dict):
                raise row_error(location, None, f"expected a JSON object, got {type(record).__name__}")
            yield location, record


def iter_json_array(path: Path) -> Iterator[tuple[Location, Any]]:
    """Yield each element of a file holding one JSON array, with the line where the element starts."""
    text = read_text(path)
    line_starts = _line_start_offsets(text)

    def location_at(offset: int) -> Location:
        return Location(str(path), line=_line_of(line_starts, offset))

    position = _skip_whitespace(text, 0)
    if not text.startswith("[", position):
        raise DataError(f"{path}, line {_line_of(line_starts, position)}: expected a JSON array of records.")
    position = _skip_whitespace(text, position + 1)
    if text.startswith("]", position):
        return
    while True:
        location = location_at(position)
        try:
            element, position = _DECODER.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise row_error(location_at(error.pos), None, f"invalid JSON: {error.msg}") from error
        except ValueError as error:
            raise row_error(location, None, f"invalid JSON: {error}") from error
        yield location, element
        position = _skip_whitespace(text, position)
        if text.startswith(",", position):
            position = _skip_whitespace(text, position + 1)
            continue
        if text.startswith("]", position):
            break
        raise row_error(location_at(position), None, "invalid JSON: expected ',' or ']' after an array element")
    if _skip_whitespace(text, position + 1) != len(text):
        raise row_error(location_at(position + 1), None, "invalid JSON: extra data after the array")


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _line_start_offsets(text: str) -> list[int]:
    return [0] + [match.end() for match in re.finditer("\n", text)]


def _line_of(line_starts: list[int], offset: int) -> int:
    # Binary search: the number of line starts at or before the offset is the 1-based line.
    low, high = 0, len(line_starts)
    while low < high:
        middle = (low + high) // 2
        if line_starts[middle] <= offset:
            low = middle + 1
        else:
            high = middle
    return low


def iter_csv_records(
    path: Path, delimiter: str = ",", required_columns: Sequence[str] = ()
) -> Iterator[tuple[Location, dict[str, str]]]:
    """Yield each data row of a CSV file that has a header row as a column -> value dict.

    Raises DataError when the header lacks a required column or a row has the wrong number of fields.
    """
    rows = iter_csv_rows(path, delimiter)
    try:
        header_location, header = next(rows)
    except StopIteration:
        raise DataError(f"{path} is empty; expected a header row and data rows.") from None
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise row_error(header_location, None, f"the header repeats the columns {duplicated}", "Rename them.")
    missing = [column for column in required_columns if column not in header]
    if missing:
        raise row_error(
            header_location,
            None,
            f"the header [{', '.join(shorten(name, 40) for name in header)}] lacks the columns {missing}",
            f"Expected a header row with the columns {list(required_columns)}.",
        )
    for location, values in rows:
        with row_guard():
            if len(values) != len(header):
                raise row_error(location, None, f"the row has {len(values)} fields but the header has {len(header)}")
            yield location, dict(zip(header, values, strict=True))


def iter_csv_rows(path: Path, delimiter: str = ",") -> Iterator[tuple[Location, list[str]]]:
    """Yield each non-blank CSV row with the line where it starts (quoted fields may span lines)."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, strict=True)
    next_line = 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            with row_guard():
                raise DataError(f"{path}, line {reader.line_num}: invalid CSV: {error}. Fix the quoting.") from error
            next_line = reader.line_num + 1
            continue
        location = Location(str(path), line=next_line)
        next_line = reader.line_num + 1
        if values and any(value.strip() for value in values):
            yield location, values


# ---------------------------------------------------------------------------
# Fields


def get_field(record: Mapping[str, Any], name: str, location: Location) -> Any:
    """Return ``record[name]``, or raise DataError listing the row's keys when the field is missing."""
    if name not in record:
        raise row_error(location, name, f"is missing; the row has the fields {sorted(map(str, record))}")
    return record[name]


def get_text(record: Mapping[str, Any], name: str, location: Location, *, allow_empty: bool = False) -> str:
    """Return a string field. Another type, or an empty string unless allowed, raises DataError."""
    value = get_field(record, name, location)
    if not isinstance(value, str):
        raise row_error(location, name, f"must be a string, got {type(value).__name__} {shorten(value)}")
    if not allow_empty and not value.strip():
        raise row_error(location, name, "is empty")
    return value


def get_optional_text(record: Mapping[str, Any], name: str, location: Location) -> str | None:
    """Return a string field, or None when it is null, empty or absent."""
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise row_error(location, name, f"must be a string or null, got {type(value).__name__} {shorten(value)}")
    return value


def get_int(record: Mapping[str, Any], name: str, location: Location) -> int:
    """Return an integer field. A numeric string such as "2", as CSV cells are, is accepted."""
    value = get_field(record, name, location)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise row_error(location, name, f"must be an integer, got {type(value).__name__} {shorten(value)}")
    return value


def parse_letter(value: object, location: Location, field: str, n_choices: int) -> int:
    """Convert an answer letter such as "B" or "(B)" to its 0-based index among ``n_choices`` choices."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*\(?([A-Za-z])\)?\s*", value)
        if match:
            index = LETTERS.index(match.group(1).upper())
            if index < n_choices:
                return index
            raise row_error(
                location,
                field,
                f"is {shorten(value)}, but the row has only {n_choices} choices (A to {LETTERS[n_choices - 1]})",
            )
    raise row_error(location, field, f"must be a letter such as 'A', got {type(value).__name__} {shorten(value)}")


def make_item(location: Location, **fields: Any) -> MCItem:
    """Build an MCItem and re-raise its validation errors with the row's location."""
    try:
        return MCItem(**fields)
    except DataError as error:
        raise DataError(f"{location}: {error}. {DEFAULT_ROW_FIX}") from error


# ---------------------------------------------------------------------------
# Finishing a load


def finish_items(
    located_items: Iterable[tuple[Location, MCItem]],
    source: str,
    duplicate_id_fix: str = "Remove one of the two rows.",
    empty_reason: str = "",
) -> list[MCItem]:
    """Check that item ids are unique, warn about repeated questions and log the count.

    Raises DataError naming both rows when two items share an id, and when there are no items
    (``empty_reason``, if given, explains why rows were dropped).
    """
    items: list[MCItem] = []
    first_seen: dict[str, Location] = {}
    for location, item in located_items:
        if item.id in first_seen:
            with row_guard():
                raise DataError(
                    f"Duplicate item id {item.id!r} at {first_seen[item.id]} and at {location}. {duplicate_id_fix}"
                )
            continue
        first_seen[item.id] = location
        items.append(item)

    if not items:
        raise DataError(f"No items in {source}{empty_reason}. Check that the file has data rows.")
    _warn_about_repeated_content(items, source)
    log.info("Loaded %d items from %s", len(items), source)
    return items


def _warn_about_repeated_content(items: Sequence[MCItem], source: str) -> None:
    # Identical items under different ids can land in both the train and the test split.
    first_id: dict[tuple[str | None, str, tuple[str, ...], int], str] = {}
    repeats: list[tuple[str, str]] = []
    for item in items:
        key = (item.context, item.question, item.choices, item.target)
        if key in first_id:
            repeats.append((first_id[key], item.id))
        else:
            first_id[key] = item.id
    if repeats:
        examples = ", ".join(f"{first} = {second}" for first, second in repeats[:3])
        log.warning(
            "%s contains %d items identical to an earlier item (for example %s); "
            "they may end up in both the train and the test split",
            source,
            len(repeats),
            examples,
        )
