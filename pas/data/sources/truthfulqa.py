"""Loader for TruthfulQA's multiple-choice task file ``mc_task.json`` (MC1: one true answer)."""

from __future__ import annotations

from pas.data.schema import MCItem
from pas.data.sources.common import (
    finish_items,
    get_field,
    get_text,
    iter_json_array,
    make_item,
    require_file,
    resolve_data_path,
    row_error,
    row_guard,
    shorten,
)


def load_truthfulqa_mc1(data_root: str | None, file: str = "truthfulqa/mc_task.json") -> list[MCItem]:
    """Load TruthfulQA MC1 items: the choices are the ``mc1_targets`` keys in file order, the target
    is the one answer marked 1.

    Upstream lists the true answer first in every item, so the choices must be shuffled before use.
    Item ids are ``truthfulqa/mc1/<record>``, where record counts from 1.
    """
    path = require_file(resolve_data_path(data_root, file), data_root)
    located = []
    for number, (location, record) in enumerate(iter_json_array(path), start=1):
        with row_guard():
            if not isinstance(record, dict):
                raise row_error(location, None, f"expected a JSON object, got {type(record).__name__}")
            targets = get_field(record, "mc1_targets", location)
            if not isinstance(targets, dict) or not targets:
                raise row_error(
                    location, "mc1_targets", f"must be a non-empty object of answer -> 0 or 1, got {shorten(targets)}"
                )
            bad = {answer: mark for answer, mark in targets.items() if isinstance(mark, bool) or mark not in (0, 1)}
            if bad:
                raise row_error(location, "mc1_targets", f"marks must be 0 or 1, got {bad}")
            true_answers = [index for index, mark in enumerate(targets.values()) if mark == 1]
            if len(true_answers) != 1:
                raise row_error(
                    location, "mc1_targets", f"must mark exactly one answer with 1, found {len(true_answers)}"
                )

            item = make_item(
                location,
                id=f"truthfulqa/mc1/{number}",
                question=get_text(record, "question", location),
                choices=tuple(targets),
                target=true_answers[0],
            )
            located.append((location, item))
    return finish_items(located, str(path))
