"""The multiple-choice item that every loader produces and every method consumes."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from pas.errors import UserError

LETTERS = string.ascii_uppercase
MIN_CHOICES = 2
MAX_CHOICES = len(LETTERS)


class DataError(UserError, ValueError):
    """A dataset, a row in it or a data setting is invalid; the message names the value and the fix."""


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question.

    ``target`` is the index in ``choices`` of the target-behavior answer: the correct answer for
    knowledge tasks, or the answer the task config declares as desired for behavior tasks.
    ``context`` is an optional passage shown before the question.
    """

    id: str
    question: str
    choices: tuple[str, ...]
    target: int
    context: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        problems = validate_item_fields(self.id, self.question, self.choices, self.target)
        if problems:
            raise DataError(f"Invalid item {self.id!r}: " + "; ".join(problems))

    @property
    def n_choices(self) -> int:
        return len(self.choices)

    @property
    def target_letter(self) -> str:
        return LETTERS[self.target]


def validate_item_fields(item_id: object, question: object, choices: object, target: object) -> list[str]:
    """Return every problem with an item's fields, so one error can list them all."""
    problems: list[str] = []
    if not isinstance(item_id, str) or not item_id:
        problems.append(f"id must be a non-empty string, got {item_id!r}")
    if not isinstance(question, str) or not question.strip():
        problems.append(f"question must be a non-empty string, got {question!r}")
    if not isinstance(choices, tuple) or not all(isinstance(c, str) for c in choices):
        problems.append(f"choices must be a tuple of strings, got {choices!r}")
        return problems
    if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
        problems.append(f"an item needs {MIN_CHOICES} to {MAX_CHOICES} choices (one letter each), got {len(choices)}")
    empty = [i for i, c in enumerate(choices) if not c.strip()]
    if empty:
        problems.append(f"choices at positions {empty} are empty strings")
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < len(choices):
        problems.append(f"target must be an index in 0..{len(choices) - 1}, got {target!r}")
    return problems
