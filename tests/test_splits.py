from __future__ import annotations

import random

import pytest

from pas.data.schema import DataError
from pas.data.splits import split_items
from tests.helpers import make_items


def test_splits_deterministic_and_disjoint() -> None:
    items = make_items(50)
    first = split_items(items, seed=3)
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    second = split_items(shuffled, seed=3)
    for name in ("train", "val", "test"):
        assert [i.id for i in first[name]] == [i.id for i in second[name]]
    ids = [set(i.id for i in first[name]) for name in ("train", "val", "test")]
    assert not ids[0] & ids[1]
    assert not ids[0] & ids[2]
    assert not ids[1] & ids[2]
    assert sum(len(s) for s in ids) == 50
    assert first.sizes() == {"train": 30, "val": 10, "test": 10}


def test_splits_depend_on_seed() -> None:
    items = make_items(50)
    assert [i.id for i in split_items(items, 1).test] != [i.id for i in split_items(items, 2).test]


def test_max_sample_size_caps() -> None:
    splits = split_items(make_items(100), seed=0, max_sample_size=20)
    assert splits.sizes() == {"train": 12, "val": 4, "test": 4}


def test_too_few_items() -> None:
    with pytest.raises(DataError, match="has 4 items, too few"):
        split_items(make_items(4), seed=0, task="tiny")


def test_bad_fractions() -> None:
    with pytest.raises(DataError, match="summing to 1"):
        split_items(make_items(10), seed=0, fractions=(0.5, 0.5, 0.5))
