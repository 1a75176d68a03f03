"""Prompt truncation for items longer than the model's context.

Policy: the lettered choices, the instruction, the answer cue (and in "question + answer" texts the
answer) are never cut. When a text is too long, tokens are cut from the start of the question
block (the context passage, then the question), which is replaced by "..." and the tokens that
still fit. If even the text with an empty question block is too long, PromptTooLongError is raised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pas.data.schema import DataError, MCItem

ELLIPSIS = "..."


class PromptTooLongError(DataError):
    """An item's choices and answer cue alone exceed the prompt token limit."""


def question_block(item: MCItem) -> str:
    return f"{item.context}\n{item.question}" if item.context else item.question


def fit_to_limit(
    item: MCItem,
    render: Callable[[MCItem], str],
    count_tokens: Callable[[str], int],
    tokenizer: Any,
    limit: int,
) -> tuple[str, bool]:
    """Return ``render(item)`` cut to at most ``limit`` tokens by the policy above, and whether it was cut."""
    text = render(item)
    length = count_tokens(text)
    if length <= limit:
        return text, False
    block_ids = tokenizer(question_block(item), add_special_tokens=False)["input_ids"]
    keep = len(block_ids) - (length - limit)
    while keep > 0:
        tail = tokenizer.decode(block_ids[-keep:])
        shortened = dataclasses.replace(item, context=None, question=ELLIPSIS + tail)
        text = render(shortened)
        length = count_tokens(text)
        if length <= limit:
            return text, True
        # Decoding and re-encoding may merge tokens differently, so step by the remaining excess.
        keep -= max(1, length - limit)
    text = render(dataclasses.replace(item, context=None, question=ELLIPSIS))
    length = count_tokens(text)
    if length <= limit:
        return text, True
    raise PromptTooLongError(
        f"item {item.id!r}: even with its question and context cut, the choices and the answer cue take "
        f"{length} tokens, more than the limit of {limit} (prompt.max_tokens or the model's context length). "
        "Shorten its choices, drop the item, or use a model with a longer context"
    )
