"""LightningDataModule over a task's items: load, shuffle choices per item, split."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from pas.data.prompts import shuffle_choices
from pas.data.schema import LETTERS, DataError, MCItem
from pas.data.sources.common import row_error_policy
from pas.data.splits import SPLIT_NAMES, Splits, split_items

log = logging.getLogger(__name__)


def _as_list(batch: list[MCItem]) -> list[MCItem]:
    return batch


class EpochPermutationSampler(torch.utils.data.Sampler[int]):
    """Shuffles ``n`` indices with a permutation that depends only on the seed and the epoch number.

    Lightning calls ``set_epoch`` before every epoch. ``epoch_offset`` is added, so a fit that
    resumes at epoch ``k`` sees the order an uninterrupted fit has in epoch ``k``.
    """

    def __init__(self, n: int, seed: int, epoch_offset: int = 0) -> None:
        self.n = n
        self.seed = seed
        self.epoch_offset = epoch_offset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + self.epoch_offset)
        return iter(torch.randperm(self.n, generator=generator).tolist())


class PASDataModule(L.LightningDataModule):
    """Loads a task once and serves its train split as batches of ``MCItem`` lists."""

    def __init__(
        self,
        load_items: Callable[[], list[MCItem]],
        task: str,
        seed: int,
        max_sample_size: int | None,
        fractions: tuple[float, float, float],
        batch_size: int,
        shuffle_choices: bool = True,
        train_size: int | None = None,
        on_error: str = "raise",
    ) -> None:
        super().__init__()
        self.load_items = load_items
        self.task = task
        self.seed = seed
        self.max_sample_size = max_sample_size
        self.fractions = fractions
        self.batch_size = batch_size
        self.shuffle = shuffle_choices
        self.train_size = train_size
        self.on_error = on_error
        self.skipped_rows = 0
        # Fine-tuning stages turn this on; PAS fitting reads the train split in order.
        self.shuffle_train = False
        # Trained stages that resume after epoch k set this to k + 1 (see EpochPermutationSampler).
        self.epoch_offset = 0
        self._splits: Splits | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        with row_error_policy(self.on_error) as skipped:
            items = self.load_items()
        self.skipped_rows = skipped.count
        if not items:
            raise DataError(f"task {self.task!r} loaded no items; check the task's loader settings and files")
        if self.shuffle:
            items = [shuffle_choices(item, self.seed) for item in items]
        self._splits = split_items(items, self.seed, self.max_sample_size, self.fractions, self.task, self.train_size)
        log.info("Task %s: %s items per split", self.task, self._splits.sizes())

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self.setup()
        assert self._splits is not None
        return self._splits

    def letter_distribution(self) -> dict[str, dict[str, int]]:
        """Count the correct letters per split, so a constant answer position is visible."""
        out = {}
        for name in SPLIT_NAMES:
            counts = Counter(LETTERS[item.target] for item in self.splits[name])
            out[name] = dict(sorted(counts.items()))
        return out

    def train_dataloader(self) -> DataLoader[Any]:
        # Own generators keep the loaders from drawing from torch's global generator, which LoRA
        # dropout uses, so the random stream is the same in an uninterrupted and a resumed run.
        sampler = EpochPermutationSampler(len(self.splits.train), self.seed, self.epoch_offset)
        return DataLoader(
            self.splits.train,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            sampler=sampler if self.shuffle_train else None,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=_as_list,
        )

    def fit_dataloader(self) -> DataLoader[Any]:
        """Read the train split in order; under DDP each process reads every world-size-th item, unpadded."""
        from pas.distributed import ShardSampler

        return DataLoader(
            self.splits.train,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            sampler=ShardSampler(len(self.splits.train)),
            collate_fn=_as_list,
        )

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(
            self.splits.val,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=False,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=_as_list,
        )
