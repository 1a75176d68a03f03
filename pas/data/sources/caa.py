"""Loader for the A/B behavior datasets used for Contrastive Activation Addition (CAA).

Each record is ``{question, answer_matching_behavior, answer_not_matching_behavior}``. The question
text ends with the options "(A) ..." and "(B) ...", sometimes under a "Choices:" line. Each answer
field is a letter such as "(A)". ``answer_matching_behavior`` is the behavior the folder is
named after (the sycophantic answer in ``sycophancy``), so the caller must choose the target field.
"""

from __future__ import annotations

from typing import Literal

from pas.data.schema import DataError, MCItem
from pas.data.sources.common import (
    finish_items,
    get_text,
    iter_json_array,
    make_item,
    require_choice,
    require_file,
    resolve_data_path,
    row_error,
    row_guard,
    shorten,
)
from pas.data.sources.options import letter_index, split_option_lines

CaaSplit = Literal["generate", "test"]
CaaTarget = Literal["answer_matching_behavior", "answer_not_matching_behavior"]

CAA_SPLIT_FILES = {
    "generate": "generate/{behavior}/generate_dataset.json",
    "test": "test/{behavior}/test_dataset_ab.json",
}
CAA_TARGETS = ("answer_matching_behavior", "answer_not_matching_behavior")


def load_caa(
    data_root: str | None,
    behavior: str,
    split: CaaSplit,
    target: CaaTarget,
    folder: str = "caa/datasets",
) -> list[MCItem]:
    """Load a CAA A/B dataset, with the answer named by the ``target`` field as the item's target.

    Files: ``<folder>/generate/<behavior>/generate_dataset.json`` or
    ``<folder>/test/<behavior>/test_dataset_ab.json``. The question is the text before the options
    (a trailing "Choices:" line is dropped). Item ids are ``caa/<behavior>/<split>/<record>``, where
    record counts from 1. ``meta["matches_behavior"]`` says whether the target is the behavior's answer.
    """
    require_choice(split, "split", tuple(CAA_SPLIT_FILES))
    require_choice(target, "target", CAA_TARGETS)
    if not behavior or "/" in behavior:
        raise DataError(f"behavior must be a folder name such as 'sycophancy', got {behavior!r}.")

    relative = f"{folder}/{CAA_SPLIT_FILES[split].format(behavior=behavior)}"
    path = require_file(resolve_data_path(data_root, relative), data_root)
    located = []
    for number, (location, record) in enumerate(iter_json_array(path), start=1):
        with row_guard():
            if not isinstance(record, dict):
                raise row_error(location, None, f"expected a JSON object, got {type(record).__name__}")
            text = get_text(record, "question", location)
            try:
                question, choices = split_option_lines(text)
            except ValueError as error:
                raise row_error(location, "question", str(error)) from error

            letters = {}
            for field in CAA_TARGETS:
                answer = get_text(record, field, location)
                try:
                    letters[field] = letter_index(answer)
                except ValueError as error:
                    raise row_error(location, field, str(error)) from error
                if letters[field] >= len(choices):
                    raise row_error(
                        location, field, f"is {shorten(answer)}, but the question lists {len(choices)} options"
                    )
            if letters[CAA_TARGETS[0]] == letters[CAA_TARGETS[1]]:
                raise row_error(location, target, "names the same option as the other answer field")

            item = make_item(
                location,
                id=f"caa/{behavior}/{split}/{number}",
                question=question,
                choices=tuple(choices),
                target=letters[target],
                meta={"behavior": behavior, "matches_behavior": target == "answer_matching_behavior"},
            )
            located.append((location, item))
    return finish_items(located, str(path))
