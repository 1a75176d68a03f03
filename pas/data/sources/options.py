"""Parsers for answer options written into text as "(A) ...", "(B) ...".

The parsers raise ValueError with the problem only, and the loaders add the file, line and field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pas.data.schema import LETTERS
from pas.data.sources.common import shorten

# An option line starts with "(A)", optionally after one space, as in " (A) Agree".
_OPTION_LINE = re.compile(r"^ ?\(([A-Z])\) ?", re.MULTILINE)
# The "Choices:" label that some prompts put on its own line above the options.
_CHOICES_LABEL = re.compile(r"\n?[ \t]*Choices:[ \t]*$", re.IGNORECASE)
# Inline options, as in OpenBookQA: "(A) first (B) second".
_INLINE_OPTION = re.compile(r"(?:^|\s)\(([A-Z])\)\s")
_OPTION_PREFIX = re.compile(r"\s*\(([A-Z])\)\s*")


def _check_letter_order(letters: Sequence[str]) -> None:
    expected = list(LETTERS[: len(letters)])
    if list(letters) != expected:
        raise ValueError(f"option letters must run {', '.join(expected)} in order, got {', '.join(letters)}")
    if len(letters) < 2:
        raise ValueError(f"found {len(letters)} option, expected at least 2")


def split_option_lines(text: str) -> tuple[str, list[str]]:
    """Split a prompt whose last lines list the options as "(A) ..." into its stem and option texts.

    The options are the lines from the last line that starts with "(A)" to the end, and an option may
    continue over several lines. A "Choices:" line right above the options is dropped from the stem.
    """
    markers = list(_OPTION_LINE.finditer(text))
    first_option = [index for index, marker in enumerate(markers) if marker.group(1) == "A"]
    if not first_option:
        raise ValueError('no line starts with "(A)"; expected options such as "\\n(A) ...\\n(B) ..."')
    markers = markers[first_option[-1] :]
    _check_letter_order([marker.group(1) for marker in markers])

    ends = [marker.start() for marker in markers[1:]] + [len(text)]
    options = [text[marker.end() : end].strip() for marker, end in zip(markers, ends, strict=True)]
    stem = _CHOICES_LABEL.sub("", text[: markers[0].start()].rstrip()).rstrip()
    if not stem.strip():
        raise ValueError("the text before the options is empty")
    return stem, options


def split_inline_options(text: str) -> list[str]:
    """Split "(A) first (B) second ..." into the option texts."""
    markers = list(_INLINE_OPTION.finditer(text))
    if not markers or text[: markers[0].start()].strip():
        raise ValueError(f'expected options such as "(A) ... (B) ...", got {shorten(text)}')
    _check_letter_order([marker.group(1) for marker in markers])
    ends = [marker.start() for marker in markers[1:]] + [len(text)]
    return [text[marker.end() : end].strip() for marker, end in zip(markers, ends, strict=True)]


def strip_option_prefixes(options: Sequence[str]) -> list[str]:
    """Remove the "(A)", "(B)", ... prefix from each option string and check the letters' order."""
    letters: list[str] = []
    texts: list[str] = []
    for option in options:
        match = _OPTION_PREFIX.match(option)
        if match is None:
            raise ValueError(f'option {shorten(option)} does not start with a letter such as "(A)"')
        letters.append(match.group(1))
        texts.append(option[match.end() :].strip())
    _check_letter_order(letters)
    return texts


def letter_index(answer: str) -> int:
    """Convert an answer such as "(B)", "B" or " (B)" to its 0-based index."""
    match = re.fullmatch(r"\s*\(?([A-Z])\)?\s*", answer)
    if match is None:
        raise ValueError(f'expected an answer letter such as "(A)", got {shorten(answer)}')
    return LETTERS.index(match.group(1))
