"""Loader for MMLU in its canonical release: ``data/<split>/<subject>_<split>.csv`` without a header."""

from __future__ import annotations

import re

from pas.data.schema import DataError, MCItem
from pas.data.sources.common import (
    finish_items,
    iter_csv_rows,
    make_item,
    parse_letter,
    require_file,
    resolve_data_path,
    row_error,
    row_guard,
)

MMLU_SPLITS = ("dev", "val", "test")
MMLU_COLUMNS = 6  # question, A, B, C, D, answer letter


def load_mmlu(data_root: str | None, subject: str, split: str = "test", folder: str = "mmlu") -> list[MCItem]:
    """Load one MMLU subject from ``<folder>/data/<split>/<subject>_<split>.csv``.

    Each row is question, four choices and the answer letter. Item ids are
    ``mmlu/<subject>/<split>/<row>``, where row counts from 1.
    """
    if split not in MMLU_SPLITS:
        raise DataError(f"split must be one of {list(MMLU_SPLITS)}, got {split!r}.")
    if not re.fullmatch(r"[a-z0-9_]+", subject or ""):
        raise DataError(f"subject must be an MMLU subject name such as 'high_school_mathematics', got {subject!r}.")

    path = require_file(resolve_data_path(data_root, f"{folder}/data/{split}/{subject}_{split}.csv"), data_root)
    located = []
    for number, (location, values) in enumerate(iter_csv_rows(path), start=1):
        with row_guard():
            if len(values) != MMLU_COLUMNS:
                raise row_error(
                    location, None, f"has {len(values)} columns, expected {MMLU_COLUMNS}: question, A, B, C, D, answer"
                )
            question, *choices, answer = values
            item = make_item(
                location,
                id=f"mmlu/{subject}/{split}/{number}",
                question=question,
                choices=tuple(choices),
                target=parse_letter(answer, location, "answer (column 6)", len(choices)),
                meta={"subject": subject},
            )
            located.append((location, item))
    return finish_items(located, str(path))
