"""Letter-bias control: does a steered gain come only from predicting one letter more often?

A vector can learn "answer B" instead of the behavior, and on a split where B is often correct that
looks like a gain. The rule, applied per method on the test split:

1. the gain is positive: more wrong-to-right than right-to-wrong flips;
2. steering raised the share of predictions of one letter by at least ``min_shift`` (10 points by
   default), the largest rise among the letters;
3. the flips to that letter alone account for the whole net gain: W2R minus R2W counted over the
   items whose steered prediction is that letter is at least the total W2R minus R2W.

All three together flag the result. The accuracy of always answering that letter is reported too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pas.data.schema import LETTERS


def letter_counts(predictions: Sequence[int]) -> dict[str, int]:
    """Count predictions per letter, in letter order."""
    counts = Counter(LETTERS[p] for p in predictions)
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class LetterBiasCheck:
    """The outcome of the letter-bias rule for one steered result."""

    flagged: bool
    letter: str | None  # the letter whose share rose most
    share_shift: float  # rise in that letter's share of predictions, in [-1, 1]
    net_gain: int  # W2R - R2W over all items
    net_gain_to_letter: int  # W2R - R2W over the items steered to that letter
    constant_letter_acc: float | None  # accuracy of always answering that letter
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_letter_bias(
    unsteered: Sequence[int], steered: Sequence[int], targets: Sequence[int], min_shift: float = 0.10
) -> LetterBiasCheck:
    """Apply the rule in this module's docstring to one set of test predictions."""
    n = len(targets)
    if n == 0 or not (len(unsteered) == len(steered) == n):
        raise ValueError(f"need equal non-empty prediction lists, got {len(unsteered)}, {len(steered)}, {n}")
    net_gain = sum(s == t for s, t in zip(steered, targets)) - sum(u == t for u, t in zip(unsteered, targets))
    before, after = Counter(unsteered), Counter(steered)
    letters = sorted(set(before) | set(after))
    shifts = {k: (after[k] - before[k]) / n for k in letters}
    top = max(letters, key=lambda k: (shifts[k], -k))
    to_top = [i for i in range(n) if steered[i] == top and unsteered[i] != top]
    net_to_top = sum(targets[i] == top for i in to_top) - sum(unsteered[i] == targets[i] for i in to_top)
    constant = sum(t == top for t in targets) / n
    flagged = net_gain > 0 and shifts[top] >= min_shift and net_to_top >= net_gain
    if flagged:
        reason = (
            f"the gain of {net_gain} items comes from flips to {LETTERS[top]}, whose share of predictions rose by "
            f"{shifts[top]:.0%}; always answering {LETTERS[top]} scores {constant:.3f}"
        )
    elif net_gain <= 0:
        reason = "no gain to explain"
    else:
        reason = f"the largest shift ({LETTERS[top]}, {shifts[top]:+.0%}) does not account for the gain alone"
    return LetterBiasCheck(flagged, LETTERS[top], shifts[top], net_gain, net_to_top, constant, reason)
