"""Loader for ARC (AI2 Reasoning Challenge) JSON Lines files: ``id``, ``question.stem``,
``question.choices[{text, label}]``, ``answerKey``."""

from __future__ import annotations

from collections.abc import Sequence

from pas.data.schema import MCItem
from pas.data.sources.common import (
    finish_items,
    get_field,
    get_text,
    iter_jsonl,
    make_item,
    resolve_data_files,
    row_error,
    row_guard,
    shorten,
)


def load_arc(data_root: str | None, files: Sequence[str]) -> list[MCItem]:
    """Load ARC items from JSON Lines files given relative to the data root.

    The target is the choice whose ``label`` equals ``answerKey``. Labels may be letters or digits.
    Item ids are ``arc/<id>``.
    """
    paths = resolve_data_files(data_root, files)
    located = []
    for path in paths:
        for location, record in iter_jsonl(path):
            with row_guard():
                question = get_field(record, "question", location)
                if not isinstance(question, dict):
                    raise row_error(
                        location, "question", f"must be an object with 'stem' and 'choices', got {shorten(question)}"
                    )
                choices = get_field(question, "choices", location)
                if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
                    raise row_error(
                        location,
                        "question.choices",
                        f"must be a list of {{text, label}} objects, got {shorten(choices)}",
                    )
                labels = [str(get_field(choice, "label", location)) for choice in choices]
                answer_key = str(get_field(record, "answerKey", location))
                if labels.count(answer_key) != 1:
                    raise row_error(
                        location,
                        "answerKey",
                        f"is {answer_key!r}, which must match exactly one of the choice labels {labels}",
                    )

                item = make_item(
                    location,
                    id=f"arc/{get_text(record, 'id', location)}",
                    question=get_text(question, "stem", location),
                    choices=tuple(get_text(choice, "text", location) for choice in choices),
                    target=labels.index(answer_key),
                    meta={"file": path.name},
                )
                located.append((location, item))
    return finish_items(located, f"ARC files {[path.name for path in paths]}")
