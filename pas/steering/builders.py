"""PAS input builders: which texts are positive and which negative for each variant.

Given the unsteered train predictions, C is the set of items answered correctly and W the set
answered wrongly (with the choice the model picked):

- ``pasf``: positive = full prompts of C, negative = full prompts of W.
- ``ipas_all``: positive = "question + correct answer" for C, negative = "question + chosen
  wrong answer" for W.
- ``ipas_wrong_only``: for W only, positive = "question + correct answer", negative = "question +
  chosen wrong answer".

Texts are named by ``TextRef`` so that one forward pass serves every variant that needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pas.data.schema import MCItem
from pas.errors import UserError

Variant = Literal["pasf", "ipas_all", "ipas_wrong_only"]
VARIANTS: tuple[str, ...] = ("pasf", "ipas_all", "ipas_wrong_only")


class EmptyContrastError(UserError, ValueError):
    """A variant has no positive or no negative texts, so its mean difference is undefined."""


@dataclass(frozen=True, order=True)
class TextRef:
    """A text to encode: the item's full prompt (``choice`` is None) or question + ``choice``'s text."""

    item: int
    choice: int | None = None


@dataclass(frozen=True)
class ContrastSet:
    """The positive and negative texts of one variant."""

    variant: str
    positive: tuple[TextRef, ...]
    negative: tuple[TextRef, ...]

    def check_nonempty(self, correct: int, wrong: int) -> None:
        empty = [side for side, refs in (("positive", self.positive), ("negative", self.negative)) if not refs]
        if empty:
            raise EmptyContrastError(
                f"{self.variant} has no {' and no '.join(empty)} texts: the model answered {correct} train "
                f"items correctly and {wrong} wrongly. Use more train items (raise data.max_sample_size), "
                f"a harder or easier task, or drop {self.variant} from method.variants"
            )


def build_contrast_sets(
    items: Sequence[MCItem], predictions: Sequence[int], variants: Sequence[str]
) -> dict[str, ContrastSet]:
    """Select each variant's positive and negative texts from the unsteered train predictions."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown PAS variants {unknown}; use any of {list(VARIANTS)}")
    if len(items) != len(predictions):
        raise ValueError(f"{len(items)} items but {len(predictions)} predictions")
    right = [i for i, (item, pred) in enumerate(zip(items, predictions)) if pred == item.target]
    wrong = [i for i, (item, pred) in enumerate(zip(items, predictions)) if pred != item.target]
    sets: dict[str, ContrastSet] = {}
    for variant in variants:
        if variant == "pasf":
            pos = tuple(TextRef(i) for i in right)
            neg = tuple(TextRef(i) for i in wrong)
        elif variant == "ipas_all":
            pos = tuple(TextRef(i, items[i].target) for i in right)
            neg = tuple(TextRef(i, predictions[i]) for i in wrong)
        else:
            pos = tuple(TextRef(i, items[i].target) for i in wrong)
            neg = tuple(TextRef(i, predictions[i]) for i in wrong)
        sets[variant] = ContrastSet(variant, pos, neg)
    return sets
