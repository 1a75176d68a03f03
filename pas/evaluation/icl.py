"""In-context learning prompts: exemplars from the train items the model got wrong, within a token budget."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from pas.data.prompts import PromptBuilder, PromptFormat, render_body
from pas.data.schema import LETTERS, DataError, MCItem

log = logging.getLogger(__name__)


def select_exemplars(items: Sequence[MCItem], predictions: Sequence[int], k: int, seed: int) -> list[MCItem]:
    """Draw ``k`` exemplars with ``seed`` from the items whose unsteered prediction was wrong.

    When fewer than ``k`` items were answered wrongly, all of them are used and a warning says so.
    """
    if k < 0:
        raise DataError(f"icl.k must be 0 or more, got {k}")
    wrong = sorted((item for item, pred in zip(items, predictions) if pred != item.target), key=lambda i: i.id)
    if len(wrong) < k:
        log.warning(
            "Only %d train items were answered wrongly, so ICL uses %d exemplars instead of %d",
            len(wrong),
            len(wrong),
            k,
        )
    return random.Random(seed).sample(wrong, min(k, len(wrong)))


class ICLPromptBuilder(PromptBuilder):
    """Prepends solved exemplars (prompt plus correct letter) to every prompt, within ``max_tokens``.

    Exemplars are dropped from the front until the whole prompt fits the budget. The item's own
    prompt is never cut, and an item never appears as its own exemplar. The "question + answer"
    texts of the introspective variants carry no exemplars.
    """

    def __init__(self, fmt: PromptFormat, tokenizer: Any, exemplars: Sequence[MCItem], max_tokens: int) -> None:
        super().__init__(fmt, tokenizer)
        if max_tokens < 1:
            raise DataError(f"icl.max_tokens must be positive, got {max_tokens}")
        self.exemplars = list(exemplars)
        self.max_tokens = max_tokens
        self.used: list[int] = []

    def _plain(self, item: MCItem, included: Sequence[MCItem]) -> str:
        blocks = [f"{render_body(ex, self.fmt)}\n{self.fmt.answer_cue} {LETTERS[ex.target]}" for ex in included]
        blocks.append(super().prompt(item))
        return "\n\n".join(blocks)

    def _chat(self, item: MCItem, included: Sequence[MCItem]) -> str:
        messages = [{"role": "system", "content": self.fmt.system_prompt}] if self.fmt.system_prompt else []
        for ex in included:
            messages.append({"role": "user", "content": render_body(ex, self.fmt)})
            messages.append({"role": "assistant", "content": LETTERS[ex.target]})
        messages.append({"role": "user", "content": render_body(item, self.fmt)})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _length(self, text: str) -> int:
        return len(self.encode([text])[0])

    def prompt(self, item: MCItem) -> str:
        included = [ex for ex in self.exemplars if ex.id != item.id]
        render = self._chat if self.fmt.chat_template else self._plain
        text = render(item, included)
        while included and self._length(text) > self.max_tokens:
            included = included[1:]
            text = render(item, included)
        if self._length(text) > self.max_tokens:
            raise DataError(
                f"item {item.id!r} alone takes {self._length(text)} tokens, more than icl.max_tokens="
                f"{self.max_tokens}; raise icl.max_tokens or drop long items"
            )
        self.used.append(len(included))
        return text

    def mean_exemplars(self) -> float:
        """Return the mean number of exemplars included per prompt rendered so far."""
        return sum(self.used) / len(self.used) if self.used else 0.0
