"""Multi-process runs: the DDP strategy for PAS, unpadded sharding, and gathered evaluation.

Under ``trainer=ddp`` every process runs the whole pipeline. Fitting shards the train split and
all-reduces sums and counts. Evaluation shards the prompts, and each engine call all-gathers the
letter logits into the original order, so every process selects from the same full-split
accuracies. A run with N processes therefore gives the vectors and accuracies of one process.
Only global rank 0 writes artifacts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.utils.data import Sampler

from pas.errors import UserError

log = logging.getLogger(__name__)


class DistributedError(UserError):
    """The run cannot be split over the configured processes."""


def rank_and_world() -> tuple[int, int]:
    """Return this process's global rank and the world size (0 and 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_global_zero() -> bool:
    """Return whether this process writes artifacts (global rank 0).

    Before the process group exists (the first ``Trainer.fit`` creates it), the rank comes from
    the variables that Lightning, torchrun and SLURM set for each process.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    if int(os.environ.get("NODE_RANK", "0")) != 0:
        return False
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if name in os.environ:
            return int(os.environ[name]) == 0
    return True


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of a dataset, in order, with no padding.

    Lightning's default distributed sampler repeats items so every process gets the same number,
    and a repeated item would be counted twice in the sums. The rank is read when iteration
    starts, after ``Trainer.fit`` has created the process group.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def _indices(self) -> range:
        rank, world = rank_and_world()
        return range(rank, self.size, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def interleave(shards: Sequence[Sequence[Any]]) -> list[Any]:
    """Undo :class:`ShardSampler`: rank ``r``'s k-th entry goes back to position ``r + k * world``."""
    world = len(shards)
    total = sum(len(s) for s in shards)
    out: list[Any] = [None] * total
    for rank, shard in enumerate(shards):
        for k, value in enumerate(shard):
            out[rank + k * world] = value
    return out


def gather_objects(value: Any) -> list[Any]:
    """Return every process's ``value``, ordered by rank (just ``[value]`` in one process)."""
    _, world = rank_and_world()
    if world == 1:
        return [value]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, value)
    return out


class GatheredEngine:
    """An engine over this process's shard of prompts whose logits cover the whole split.

    ``make(indices)`` builds the inner engine for the given prompt indices. Each call gathers the
    shards' letter logits (small: one value per kept letter token) and restores the item order.
    """

    def __init__(self, make: Any, size: int) -> None:
        rank, self.world = rank_and_world()
        if size < self.world:
            raise DistributedError(
                f"cannot split {size} prompts over {self.world} processes; use at most {size} devices "
                "(trainer.devices x trainer.num_nodes) or a larger split"
            )
        self.size = size
        self.inner = make(list(range(rank, size, self.world)))
        self.letter_positions = self.inner.letter_positions

    def _gather(self, logits: torch.Tensor, item_dim: int) -> torch.Tensor:
        shards = gather_objects(logits.detach().cpu())
        parts = [s.movedim(item_dim, 0) for s in shards]
        rows = interleave([list(p) for p in parts])
        return torch.stack(rows).movedim(0, item_dim)

    def unsteered_logits(self) -> torch.Tensor:
        return self._gather(self.inner.unsteered_logits(), 0)

    def steered_logits(self, layer: int, site: Any, deltas: torch.Tensor) -> torch.Tensor:
        return self._gather(self.inner.steered_logits(layer, site, deltas), 1)


class PASDDPStrategy(DDPStrategy):
    """DDP that leaves a module with no trainable parameters unwrapped.

    Fitting PAS vectors trains nothing, and ``DistributedDataParallel`` raises an error for a module
    without a parameter that requires a gradient. Such a module needs no gradient synchronization, only the
    process group, which the strategy still sets up. Modules with trainable parameters (LoRA, the
    trained vector) are wrapped as usual.
    """

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if not any(p.requires_grad for p in model.parameters()):
            log.debug("No trainable parameters: running %s without the DDP wrapper", type(model).__name__)
            return model
        return super()._setup_model(model)
