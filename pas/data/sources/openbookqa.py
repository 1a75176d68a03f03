"""Loader for OpenBookQA's TSV release: columns ``ID``, ``Question Stem``, ``Choices``
("(A) ... (B) ..."), ``Complete Question``, ``Answer Key``."""

from __future__ import annotations

from collections.abc import Sequence

from pas.data.schema import MCItem
from pas.data.sources.common import (
    finish_items,
    get_text,
    iter_csv_records,
    make_item,
    parse_letter,
    resolve_data_files,
    row_error,
    row_guard,
)
from pas.data.sources.options import split_inline_options

OPENBOOKQA_COLUMNS = ("ID", "Question Stem", "Choices", "Answer Key")


def load_openbookqa(data_root: str | None, files: Sequence[str]) -> list[MCItem]:
    """Load OpenBookQA items from TSV files given relative to the data root.

    Item ids are ``openbookqa/<file stem>/<ID>``.
    """
    paths = resolve_data_files(data_root, files)
    located = []
    for path in paths:
        for location, row in iter_csv_records(path, delimiter="\t", required_columns=OPENBOOKQA_COLUMNS):
            with row_guard():
                try:
                    choices = split_inline_options(row["Choices"])
                except ValueError as error:
                    raise row_error(location, "Choices", str(error)) from error
                item = make_item(
                    location,
                    id=f"openbookqa/{path.stem}/{get_text(row, 'ID', location).strip()}",
                    question=get_text(row, "Question Stem", location),
                    choices=tuple(choices),
                    target=parse_letter(row["Answer Key"], location, "Answer Key", len(choices)),
                    meta={"file": path.name},
                )
                located.append((location, item))
    return finish_items(located, f"OpenBookQA files {[path.name for path in paths]}")
