"""Evaluation engines that score many steering configurations on one fixed set of prompts.

``NaiveEngine`` runs a full batched forward pass per configuration and is the reference.
``PrefixCacheEngine`` is exact too. Under causal attention, steering at the last position cannot
change the keys and values of earlier positions. So it runs every prompt except its last token
once and keeps the key/value cache; each configuration then runs only the last token against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from pas.evaluation.scoring import (
    EncodedBatch,
    SteerFactory,
    iter_batches,
    last_logits_full,
    model_device,
)


class Engine(Protocol):
    """Computes last-position logits ``(N, V)`` for fixed prompts under an optional steering hook."""

    def logits(self, context: SteerFactory | None = None) -> torch.Tensor: ...


class NaiveEngine:
    """One full forward pass over every prompt per call: the reference implementation."""

    def __init__(self, model: nn.Module, token_lists: Sequence[Sequence[int]], batch_size: int) -> None:
        self.model = model
        self.token_lists = token_lists
        self.batch_size = batch_size

    def logits(self, context: SteerFactory | None = None) -> torch.Tensor:
        return last_logits_full(self.model, self.token_lists, self.batch_size, context)


@dataclass
class _CachedBatch:
    batch: EncodedBatch
    cache: Any


class PrefixCacheEngine:
    """Caches keys and values of all positions but the last; each call re-runs only the last token."""

    def __init__(self, model: nn.Module, token_lists: Sequence[Sequence[int]], batch_size: int) -> None:
        if any(len(ids) < 2 for ids in token_lists):
            raise ValueError("PrefixCacheEngine needs prompts of at least 2 tokens; use the naive engine")
        self.model = model
        self.n = len(token_lists)
        self.batches: list[_CachedBatch] = []
        with torch.inference_mode():
            for batch in iter_batches(token_lists, batch_size, model_device(model)):
                out = model(
                    input_ids=batch.input_ids[:, :-1],
                    attention_mask=batch.attention_mask[:, :-1],
                    position_ids=batch.position_ids[:, :-1],
                    use_cache=True,
                    logits_to_keep=1,
                )
                self.batches.append(_CachedBatch(batch, out.cache))

    @torch.inference_mode()
    def logits(self, context: SteerFactory | None = None) -> torch.Tensor:
        out: list[torch.Tensor | None] = [None] * self.n
        for cached in self.batches:
            batch = cached.batch
            try:
                with context() if context else nullcontext():
                    logits = self.model(
                        input_ids=batch.input_ids[:, -1:],
                        attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids[:, -1:],
                        cache=cached.cache,
                        use_cache=True,
                        logits_to_keep=1,
                    ).logits[:, -1, :]
            finally:
                # The call appended the last token's keys and values; drop them so the cache is
                # the prefix again for the next configuration.
                if cached.cache.get_seq_length() == batch.input_ids.shape[1]:
                    cached.cache.crop(-1)
            for row, i in enumerate(batch.index):
                out[i] = logits[row].float()
        return torch.stack(out)  # type: ignore[arg-type]


ENGINES = {"naive": NaiveEngine, "cached": PrefixCacheEngine}


def make_engine(name: str, model: nn.Module, token_lists: Sequence[Sequence[int]], batch_size: int) -> Engine:
    if name not in ENGINES:
        raise ValueError(f"unknown sweep engine {name!r}; use one of {sorted(ENGINES)}")
    return ENGINES[name](model, token_lists, batch_size)
