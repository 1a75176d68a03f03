from __future__ import annotations

import random
from pathlib import Path

import pytest

from pas.config import ConfigError, validate_run_config
from pas.data.schema import DataError
from pas.data.splits import split_items
from pas.pipeline import run
from tests.helpers import make_items
from tests.test_train import _compose, _overrides, _save_model, _write_task


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


def test_train_size_keeps_val_and_test() -> None:
    items = make_items(100)
    full = split_items(items, seed=4, max_sample_size=50)
    for size in (1, 12, 30):
        small = split_items(items, seed=4, max_sample_size=50, train_size=size)
        assert small.sizes() == {"train": size, "val": 10, "test": 10}
        assert [i.id for i in small.train] == [i.id for i in full.train[:size]]
        assert [i.id for i in small.val] == [i.id for i in full.val]
        assert [i.id for i in small.test] == [i.id for i in full.test]


def test_train_size_nested_across_sizes() -> None:
    items = make_items(80)
    small = {i.id for i in split_items(items, seed=2, train_size=12).train}
    large = {i.id for i in split_items(items, seed=2, train_size=24).train}
    assert small < large


def test_train_size_larger_than_train_split() -> None:
    with pytest.raises(DataError, match=r"train_size=31 is larger than the 30 train items of task 'tiny'"):
        split_items(make_items(50), seed=0, task="tiny", train_size=31)


@pytest.mark.parametrize("bad", [0, -3, True, 2.5])
def test_train_size_invalid(bad: object) -> None:
    with pytest.raises(DataError, match="train_size must be a positive integer"):
        split_items(make_items(50), seed=0, train_size=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["0", "-5", "true", "1.5", "many"])
def test_config_rejects_bad_train_size(bad: str) -> None:
    cfg = _compose(["task=bbq_sample", f"data.train_size={bad}", "output_dir=unused"])
    with pytest.raises(ConfigError, match="data.train_size must be null"):
        validate_run_config(cfg)


def test_run_with_train_size(tmp_path: Path) -> None:
    model_dir = _save_model(tmp_path / "model")
    task = _write_task(tmp_path / "items.jsonl", 40)
    full = run(_compose(_overrides(model_dir, task, tmp_path / "full")))
    small = run(_compose(_overrides(model_dir, task, tmp_path / "small", "data.train_size=9")))
    assert full["splits"] == {"train": 24, "val": 8, "test": 8}
    assert small["splits"] == {"train": 9, "val": 8, "test": 8}
    assert small["unsteered"]["test_acc"] == full["unsteered"]["test_acc"]
    assert small["unsteered"]["val_acc"] == full["unsteered"]["val_acc"]
    counts = small["methods"]["pasf"]["train_counts"]
    assert sum(counts.values()) == 9, counts
