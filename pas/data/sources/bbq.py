"""Loader for BBQ, the Bias Benchmark for QA, in its upstream JSON Lines format (one file per category)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from pas.data.schema import DataError, MCItem
from pas.data.sources.common import (
    Location,
    finish_items,
    get_field,
    get_int,
    get_text,
    iter_jsonl,
    make_item,
    missing_path_error,
    require_choice,
    resolve_data_files,
    resolve_data_path,
    row_error,
    row_guard,
    shorten,
)

log = logging.getLogger(__name__)

CONTEXT_CONDITIONS = ("ambig", "disambig")
BBQ_ANSWER_FIELDS = ("ans0", "ans1", "ans2")


def load_bbq(
    data_root: str | None,
    files: Sequence[str] | None = None,
    folder: str = "bbq",
    context_condition: str | None = None,
) -> list[MCItem]:
    """Load BBQ items from upstream ``<Category>.jsonl`` files.

    ``files`` are paths relative to the data root, and None loads every ``*.jsonl`` in ``folder``.
    ``context_condition`` keeps only "ambig" (under-informative context, the correct answer is
    the "unknown" option) or "disambig" items. The target is BBQ's ``label``, the correct answer.
    Item ids are ``bbq/<category>/<example_id>``.
    """
    if context_condition is not None:
        require_choice(context_condition, "context_condition", CONTEXT_CONDITIONS)
    paths = _bbq_paths(data_root, files, folder)
    located = (
        (location, item)
        for path in paths
        for location, item in _read_bbq_file(path)
        if context_condition is None or item.meta["context_condition"] == context_condition
    )
    empty_reason = f" with context_condition={context_condition!r}" if context_condition else ""
    return finish_items(located, f"BBQ files {[str(path) for path in paths]}", empty_reason=empty_reason)


def _bbq_paths(data_root: str | None, files: Sequence[str] | None, folder: str) -> list[Path]:
    if files is not None:
        return resolve_data_files(data_root, files)

    directory = resolve_data_path(data_root, folder)
    if not directory.is_dir():
        raise missing_path_error(directory, data_root, "BBQ folder")
    paths = sorted(directory.glob("*.jsonl"))
    if not paths:
        raise DataError(f"The BBQ folder {directory} contains no *.jsonl files. Pass files=[...] or folder=...")
    log.info("Loading BBQ from %s, categories found: %s", directory, ", ".join(path.stem for path in paths))
    return paths


def _read_bbq_file(path: Path) -> Iterator[tuple[Location, MCItem]]:
    for location, record in iter_jsonl(path):
        with row_guard():
            label = get_int(record, "label", location)
            if not 0 <= label < len(BBQ_ANSWER_FIELDS):
                raise row_error(location, "label", f"must be 0, 1 or 2 (the index of ans0..ans2), got {label}")
            example_id = get_field(record, "example_id", location)
            if isinstance(example_id, bool) or not isinstance(example_id, int | str):
                raise row_error(location, "example_id", f"must be an integer or a string, got {shorten(example_id)}")
            category = get_text(record, "category", location)
            condition = get_text(record, "context_condition", location)
            if condition not in CONTEXT_CONDITIONS:
                raise row_error(location, "context_condition", f"must be 'ambig' or 'disambig', got {condition!r}")

            additional = record.get("additional_metadata")
            meta = {
                "category": category,
                "context_condition": condition,
                "question_polarity": get_text(record, "question_polarity", location),
                "question_index": record.get("question_index"),
                "answer_info": record.get("answer_info"),
                "stereotyped_groups": additional.get("stereotyped_groups") if isinstance(additional, dict) else None,
            }
            item = make_item(
                location,
                id=f"bbq/{category}/{example_id}",
                question=get_text(record, "question", location),
                choices=tuple(get_text(record, name, location) for name in BBQ_ANSWER_FIELDS),
                target=label,
                context=get_text(record, "context", location),
                meta=meta,
            )
            yield location, item
