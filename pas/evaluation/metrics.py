"""Accuracy and per-item flips between unsteered and steered predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Flips:
    """Counts of items that went right-to-wrong (R2W) and wrong-to-right (W2R) under steering."""

    r2w: int
    w2r: int

    @property
    def net(self) -> int:
        return self.w2r - self.r2w


def accuracy(pred: Sequence[int], targets: Sequence[int]) -> float:
    if len(pred) != len(targets):
        raise ValueError(f"{len(pred)} predictions but {len(targets)} targets")
    if not targets:
        return float("nan")
    return sum(p == t for p, t in zip(pred, targets)) / len(targets)


def flip_labels(base: Sequence[int], steered: Sequence[int], targets: Sequence[int]) -> list[str]:
    """Label each item ``R2W``, ``W2R``, ``R2R`` or ``W2W`` (unsteered state, then steered state)."""
    labels = []
    for before, after, target in zip(base, steered, targets, strict=True):
        state_before = "R" if before == target else "W"
        state_after = "R" if after == target else "W"
        labels.append(f"{state_before}2{state_after}")
    return labels


def count_flips(base: Sequence[int], steered: Sequence[int], targets: Sequence[int]) -> Flips:
    labels = flip_labels(base, steered, targets)
    return Flips(r2w=labels.count("R2W"), w2r=labels.count("W2R"))
