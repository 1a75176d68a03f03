"""Loaders for a user's own labeled multiple-choice data: local JSON Lines / JSON / CSV / TSV files
and datasets loaded through Hugging Face ``datasets`` (a Hub id, a local folder or a local file).

Both map rows to items with the same field options, described in ``load_generic``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pas.data.schema import DataError, MCItem
from pas.data.sources.common import (
    Location,
    finish_items,
    get_field,
    get_int,
    get_optional_text,
    get_text,
    iter_csv_records,
    iter_json_array,
    iter_jsonl,
    make_item,
    missing_path_error,
    parse_letter,
    require_file,
    resolve_data_path,
    row_error,
    row_guard,
    shorten,
)

FileFormat = Literal["jsonl", "json", "csv", "tsv"]
AnswerFormat = Literal["index", "letter", "text"]

FILE_FORMATS = ("jsonl", "json", "csv", "tsv")
ANSWER_FORMATS = ("index", "letter", "text")
FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
# `datasets` packaged builder (and its keyword arguments) for a local data file, by suffix.
HUB_BUILDER_BY_SUFFIX: dict[str, tuple[str, dict[str, Any]]] = {
    ".jsonl": ("json", {}),
    ".ndjson": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".parquet": ("parquet", {}),
}


@dataclass(frozen=True)
class FieldMapping:
    """Names of the row fields that contain the question, the choices, the answer, the context and the id."""

    question_field: str
    choices_field: str | None
    choice_fields: tuple[str, ...] | None
    answer_field: str
    answer_format: str
    context_field: str | None
    id_field: str | None

    def required_fields(self) -> list[str]:
        """Return the fields every row must have (the context field may be absent)."""
        fields = [self.question_field, self.answer_field]
        fields += [self.choices_field] if self.choices_field else list(self.choice_fields or ())
        if self.id_field:
            fields.append(self.id_field)
        return fields


def build_field_mapping(
    question_field: str,
    choices_field: str | None,
    choice_fields: Sequence[str] | None,
    answer_field: str,
    answer_format: str,
    context_field: str | None,
    id_field: str | None,
) -> FieldMapping:
    """Validate the field options together and raise one DataError that lists every problem."""
    problems: list[str] = []
    for parameter, value in (("question_field", question_field), ("answer_field", answer_field)):
        if not isinstance(value, str) or not value:
            problems.append(f"{parameter} must be a non-empty field name, got {shorten(value)}")
    for parameter, value in (
        ("context_field", context_field),
        ("id_field", id_field),
        ("choices_field", choices_field),
    ):
        if value is not None and (not isinstance(value, str) or not value):
            problems.append(f"{parameter} must be a field name or null, got {shorten(value)}")
    if answer_format not in ANSWER_FORMATS:
        problems.append(f"answer_format must be one of {list(ANSWER_FORMATS)}, got {answer_format!r}")

    fields: tuple[str, ...] | None = None
    if choice_fields is not None:
        if isinstance(choice_fields, str) or not isinstance(choice_fields, Sequence):
            problems.append(f"choice_fields must be a list of field names (one per choice), got {choice_fields!r}")
        else:
            fields = tuple(choice_fields)
            if len(fields) < 2 or not all(isinstance(name, str) and name for name in fields):
                problems.append(f"choice_fields must list at least 2 field names, got {list(fields)}")
            elif len(set(fields)) != len(fields):
                problems.append(f"choice_fields repeats a field name: {list(fields)}")
        if choices_field is not None:
            problems.append(
                f"choices_field={choices_field!r} and choice_fields={choice_fields!r} are both set; "
                "use one: set choices_field=null to take one column per choice"
            )
    elif choices_field is None:
        problems.append("set choices_field (a list column) or choice_fields (one column per choice)")

    if problems:
        raise DataError("Invalid field options: " + "; ".join(problems) + ".")
    return FieldMapping(question_field, choices_field, fields, answer_field, answer_format, context_field, id_field)


def record_to_item(record: Mapping[str, Any], location: Location, mapping: FieldMapping, number: int) -> MCItem:
    """Map one row to an MCItem. Without an id field the id is "row-<number>", with ``number`` counted from 1."""
    choices, labels = _read_choices(record, location, mapping)
    if len(choices) < 2:
        raise row_error(location, mapping.choices_field, f"must contain at least 2 choices, got {shorten(choices)}")

    answer = get_field(record, mapping.answer_field, location)
    target = _answer_index(answer, location, mapping, choices, labels)
    item_id = f"row-{number}"
    if mapping.id_field:
        raw_id = get_field(record, mapping.id_field, location)
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
            raise row_error(
                location, mapping.id_field, f"must be a non-empty string or an integer, got {shorten(raw_id)}"
            )
        item_id = str(raw_id).strip()

    context = get_optional_text(record, mapping.context_field, location) if mapping.context_field else None
    return make_item(
        location,
        id=item_id,
        question=get_text(record, mapping.question_field, location),
        choices=tuple(choices),
        target=target,
        context=context,
    )


def _read_choices(
    record: Mapping[str, Any], location: Location, mapping: FieldMapping
) -> tuple[list[str], list[str] | None]:
    # Returns the choice texts and, for Hub-style {"text": [...], "label": [...]} choices, their labels.
    if mapping.choice_fields:
        return [_choice_text(get_field(record, name, location), location, name) for name in mapping.choice_fields], None

    field = mapping.choices_field
    assert field is not None  # build_field_mapping requires one of the two
    value = get_field(record, field, location)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise row_error(
                location,
                field,
                f'must be a list; in CSV, a JSON-encoded list such as ["yes", "no"]. Got {shorten(value)}',
            ) from None
    labels = None
    if isinstance(value, Mapping) and "text" in value:
        labels = value.get("label")
        value = value["text"]
    if not isinstance(value, list):
        raise row_error(location, field, f"must be a list of choices, got {type(value).__name__} {shorten(value)}")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(value)):
        raise row_error(location, field, f"has labels {shorten(labels)} that do not match its texts {shorten(value)}")
    texts = [_choice_text(choice, location, field) for choice in value]
    return texts, [str(label) for label in labels] if labels is not None else None


def _choice_text(value: object, location: Location, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise row_error(location, field, f"contains a choice that is not a string or a number: {shorten(value)}")


def _answer_index(
    answer: object, location: Location, mapping: FieldMapping, choices: list[str], labels: list[str] | None
) -> int:
    field = mapping.answer_field
    if mapping.answer_format == "index":
        index = get_int({field: answer}, field, location)
        if not 0 <= index < len(choices):
            raise row_error(location, field, f"must be a choice index in 0..{len(choices) - 1}, got {index}")
        return index
    if mapping.answer_format == "letter":
        if labels is not None:
            if labels.count(str(answer).strip()) != 1:
                raise row_error(
                    location, field, f"is {shorten(answer)}, which must match exactly one choice label in {labels}"
                )
            return labels.index(str(answer).strip())
        return parse_letter(answer, location, field, len(choices))

    # answer_format == "text": the answer must equal exactly one choice.
    if not isinstance(answer, str):
        raise row_error(
            location, field, f"must be the text of one choice, got {type(answer).__name__} {shorten(answer)}"
        )
    matches = [index for index, choice in enumerate(choices) if choice.strip() == answer.strip()]
    if len(matches) != 1:
        found = "none" if not matches else f"{len(matches)}"
        raise row_error(
            location,
            field,
            f"is {shorten(answer)}, which must equal exactly one choice; {found} of {shorten(choices)} match",
        )
    return matches[0]


# ---------------------------------------------------------------------------
# Local files


def load_generic(
    path: str,
    format: FileFormat | None = None,
    question_field: str = "question",
    choices_field: str | None = "choices",
    choice_fields: Sequence[str] | None = None,
    answer_field: str = "answer",
    answer_format: AnswerFormat = "index",
    context_field: str | None = None,
    id_field: str | None = None,
    data_root: str | None = None,
) -> list[MCItem]:
    """Load a user's own labeled multiple-choice file (JSON Lines, a JSON array, CSV or TSV).

    - ``format``: "jsonl", "json", "csv" or "tsv". None infers it from the file suffix.
    - ``choices_field``: a field holding the list of choices (in CSV, a JSON-encoded list), or
      ``choice_fields``: one field per choice, in order (then set ``choices_field=None``).
    - ``answer_field`` with ``answer_format``: "index" (0-based), "letter" ("A", "(B)") or "text"
      (equal to one choice).
    - ``context_field``: optional passage shown before the question.
    - ``id_field``: field with unique item ids. Without it, ids are "row-<n>" with n counting rows from 1.
    - ``data_root``: when given, a relative ``path`` is resolved against it.
    """
    mapping = build_field_mapping(
        question_field, choices_field, choice_fields, answer_field, answer_format, context_field, id_field
    )
    file_path = resolve_data_path(data_root, path) if data_root else Path(path).expanduser()
    file_format = _file_format(file_path, format)
    require_file(file_path, data_root)

    records = _iter_records(file_path, file_format, mapping)
    return finish_items(_located_items(records, mapping), str(file_path), _duplicate_id_fix(mapping))


def _located_items(
    records: Iterable[tuple[Location, Mapping[str, Any]]], mapping: FieldMapping
) -> Iterator[tuple[Location, MCItem]]:
    for number, (location, record) in enumerate(records, start=1):
        with row_guard():
            yield location, record_to_item(record, location, mapping, number)


def _file_format(path: Path, file_format: str | None) -> str:
    if file_format is None:
        if path.suffix.lower() not in FORMAT_BY_SUFFIX:
            raise DataError(
                f"Cannot tell the format of {path} from its suffix {path.suffix!r}; "
                f"pass format= one of {list(FILE_FORMATS)}."
            )
        return FORMAT_BY_SUFFIX[path.suffix.lower()]
    if file_format not in FILE_FORMATS:
        raise DataError(f"format must be one of {list(FILE_FORMATS)} or null, got {file_format!r}.")
    return file_format


def _iter_records(path: Path, file_format: str, mapping: FieldMapping) -> Iterator[tuple[Location, Mapping[str, Any]]]:
    if file_format == "jsonl":
        yield from iter_jsonl(path)
    elif file_format == "json":
        for location, record in iter_json_array(path):
            if not isinstance(record, dict):
                raise row_error(
                    location,
                    None,
                    f"expected a JSON object, got {type(record).__name__} (a JSON file holds an array of objects)",
                )
            yield location, record
    else:
        delimiter = "\t" if file_format == "tsv" else ","
        yield from iter_csv_records(path, delimiter=delimiter, required_columns=mapping.required_fields())


def _duplicate_id_fix(mapping: FieldMapping) -> str:
    if mapping.id_field:
        return f"Make the values of {mapping.id_field!r} unique, or set id_field=null to number the rows."
    return "Remove one of the two rows."


# ---------------------------------------------------------------------------
# Hugging Face datasets


def load_hub(
    dataset_id: str,
    split: str,
    name: str | None = None,
    revision: str | None = None,
    question_field: str = "question",
    choices_field: str | None = "choices",
    choice_fields: Sequence[str] | None = None,
    answer_field: str = "answer",
    answer_format: AnswerFormat = "index",
    context_field: str | None = None,
    id_field: str | None = None,
    cache_dir: str | None = None,
) -> list[MCItem]:
    """Load a dataset with ``datasets.load_dataset`` and map its rows as ``load_generic`` does.

    ``dataset_id`` is a Hub id ("owner/name"), a local dataset folder, or a local data file
    (.jsonl, .json, .csv, .tsv, .parquet), whose rows are then served as split ``split``.
    Choices may also be Hub-style ``{"text": [...], "label": [...]}``. With ``answer_format="letter"``,
    the answer is then matched against those labels.
    """
    mapping = build_field_mapping(
        question_field, choices_field, choice_fields, answer_field, answer_format, context_field, id_field
    )
    if not isinstance(dataset_id, str) or not dataset_id.strip():
        raise DataError(f"dataset_id must be a Hub id or a local path, got {dataset_id!r}.")
    dataset = _load_dataset(dataset_id, split, name, revision, cache_dir)

    columns = list(dataset.column_names)
    missing = [field for field in mapping.required_fields() if field not in columns]
    if missing:
        raise DataError(
            f"{dataset_id} (split {split!r}) has no columns {missing}; its columns are {columns}. "
            "Point question_field, choices_field or choice_fields, answer_field and id_field at these columns."
        )

    source = f"{dataset_id} (split {split!r})"
    return finish_items(_hub_items(dataset, source, mapping), source, _duplicate_id_fix(mapping))


def _hub_items(
    rows: Iterable[Mapping[str, Any]], source: str, mapping: FieldMapping
) -> Iterator[tuple[Location, MCItem]]:
    for index, row in enumerate(rows):
        location = Location(source, row=index)
        with row_guard():
            yield location, record_to_item(row, location, mapping, index + 1)


def _looks_like_local_path(dataset_id: str) -> bool:
    # Hub ids are "name" or "owner/name", while paths start with "/", ".", "~" or end in a data file suffix.
    return (
        dataset_id.startswith(("/", ".", "~"))
        or dataset_id.count("/") > 1
        or Path(dataset_id).suffix.lower() in HUB_BUILDER_BY_SUFFIX
    )


def _load_dataset(dataset_id: str, split: str, name: str | None, revision: str | None, cache_dir: str | None) -> Any:
    # Imported here because importing `datasets` takes about a second and only this loader needs it.
    import datasets

    local = Path(dataset_id).expanduser()
    if local.is_file():
        suffix = local.suffix.lower()
        if suffix not in HUB_BUILDER_BY_SUFFIX:
            raise DataError(
                f"Cannot load {local}: the suffix {local.suffix!r} is not one of {sorted(HUB_BUILDER_BY_SUFFIX)}."
            )
        builder, options = HUB_BUILDER_BY_SUFFIX[suffix]
        arguments: dict[str, Any] = {"path": builder, "data_files": {split: str(local)}, **options}
    elif local.is_dir():
        arguments = {"path": str(local), "name": name, "revision": revision}
    elif _looks_like_local_path(dataset_id):
        # Fail at once: `datasets` would treat it as a Hub id and retry the network for about 20 s.
        raise missing_path_error(local.absolute(), None, "Local dataset path")
    else:
        arguments = {"path": dataset_id, "name": name, "revision": revision}

    try:
        return datasets.load_dataset(**arguments, split=split, cache_dir=cache_dir)
    except (OSError, datasets.exceptions.DatasetsError) as error:
        # OSError covers FileNotFoundError (unknown id or path), ConnectionError and Hub HTTP errors.
        raise DataError(
            f"Could not load the dataset {dataset_id!r} (name={name!r}, split={split!r}, revision={revision!r}): "
            f"{error}. If it is a Hub id, check the spelling; the Hugging Face Hub may also be unreachable "
            "from this machine, and a local dataset folder or data file path works as dataset_id too."
        ) from error
    except ValueError as error:
        # For example an unknown split or config name.
        raise DataError(f"Could not load {dataset_id!r} (name={name!r}, split={split!r}): {error}") from error
