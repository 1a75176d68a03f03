"""Loader for AGIEval multiple-choice JSON Lines files such as ``lsat-ar.jsonl``:
``passage`` (may be null), ``question``, ``options`` ("(A)..."), ``label`` (a letter)."""

from __future__ import annotations

from collections.abc import Sequence

from pas.data.schema import MCItem
from pas.data.sources.common import (
    finish_items,
    get_field,
    get_optional_text,
    get_text,
    iter_jsonl,
    make_item,
    parse_letter,
    resolve_data_files,
    row_error,
    row_guard,
    shorten,
)
from pas.data.sources.options import strip_option_prefixes


def load_agieval(data_root: str | None, files: Sequence[str]) -> list[MCItem]:
    """Load AGIEval items from JSON Lines files given relative to the data root.

    The passage becomes the item's context. Rows with several correct letters (a list ``label``)
    are rejected. Item ids are ``agieval/<file stem>/<line>``.
    """
    paths = resolve_data_files(data_root, files)
    located = []
    for path in paths:
        for location, record in iter_jsonl(path):
            with row_guard():
                options = get_field(record, "options", location)
                if not isinstance(options, list) or not all(isinstance(option, str) for option in options):
                    raise row_error(
                        location, "options", f"must be a list of strings such as '(A)...', got {shorten(options)}"
                    )
                try:
                    choices = strip_option_prefixes(options)
                except ValueError as error:
                    raise row_error(location, "options", str(error)) from error
                label = get_field(record, "label", location)
                if isinstance(label, list):
                    raise row_error(
                        location, "label", f"lists several answers {label}, but an item has exactly one target"
                    )

                item = make_item(
                    location,
                    id=f"agieval/{path.stem}/{location.line}",
                    question=get_text(record, "question", location),
                    choices=tuple(choices),
                    target=parse_letter(label, location, "label", len(choices)),
                    context=get_optional_text(record, "passage", location),
                    meta={"file": path.name},
                )
                located.append((location, item))
    return finish_items(located, f"AGIEval files {[path.name for path in paths]}")
