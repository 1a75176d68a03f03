"""Seeded train / validation / test splits."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pas.data.schema import DataError, MCItem

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    """Disjoint train, validation and test items."""

    train: list[MCItem]
    val: list[MCItem]
    test: list[MCItem]

    def __getitem__(self, name: str) -> list[MCItem]:
        if name not in SPLIT_NAMES:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLIT_NAMES}")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {name: len(self[name]) for name in SPLIT_NAMES}


def split_items(
    items: list[MCItem],
    seed: int,
    max_sample_size: int | None = None,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    task: str = "task",
    train_size: int | None = None,
) -> Splits:
    """Shuffle ``items`` with ``seed``, keep at most ``max_sample_size`` and split them by ``fractions``.

    Items are first sorted by id, so the result does not depend on the order a loader returned.
    Validation and test sizes are rounded down and train takes the rest. ``train_size`` then keeps
    only the first ``train_size`` train items (already in seeded order), so validation and test stay
    the same for every train size: the setup of a sample-size study.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(
            f"split fractions must be three positive numbers summing to 1, got {list(fractions)}; "
            "set data.split=[0.6,0.2,0.2] or similar"
        )
    if max_sample_size is not None and max_sample_size < 3:
        raise DataError(f"max_sample_size must be at least 3 (one item per split), got {max_sample_size}")
    ordered = sorted(items, key=lambda item: item.id)
    random.Random(seed).shuffle(ordered)
    if max_sample_size is not None:
        ordered = ordered[:max_sample_size]
    n = len(ordered)
    n_val = int(n * fractions[1])
    n_test = int(n * fractions[2])
    n_train = n - n_val - n_test
    if min(n_train, n_val, n_test) < 1:
        raise DataError(
            f"task {task!r} has {n} items, too few for train/val/test splits of {list(fractions)} "
            f"(sizes would be {n_train}/{n_val}/{n_test}); use a larger dataset or raise max_sample_size"
        )
    if train_size is not None:
        if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1:
            raise DataError(f"train_size must be a positive integer or null, got {train_size!r}")
        if train_size > n_train:
            raise DataError(
                f"train_size={train_size} is larger than the {n_train} train items of task {task!r} "
                f"({n} items split by {list(fractions)}). Lower data.train_size, or raise data.max_sample_size "
                "(which also grows validation and test) if the dataset has more items"
            )
        n_kept = train_size
    else:
        n_kept = n_train
    return Splits(
        train=ordered[:n_kept],
        val=ordered[n_train : n_train + n_val],
        test=ordered[n_train + n_val :],
    )
