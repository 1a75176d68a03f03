"""Greedy generation with an optional steering vector, identical with and without the KV cache and batching.

The vector is added at the last prompt position and at every generated position, and nowhere else.
Prompts are left-padded, so in a batch every prompt ends in the same column. Position ids count
real tokens only and the attention mask hides the padding, so a prompt gets the same tokens alone
or in any batch (up to float rounding in the batched matrix products).

With the cache, the first pass runs the prompts and steers their last position, and each later pass
runs only the new token and steers it. Without the cache every pass runs the whole sequence and
steers the last prompt position and every generated position, so both paths compute the same
activations at every position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pas.evaluation.scoring import left_pad, model_device
from pas.models.layers import Site
from pas.steering.hooks import add_at_site


@dataclass(frozen=True)
class Steering:
    """A vector ``v`` added as ``h <- h + strength * v`` at ``site`` of decoder block ``layer``."""

    vector: torch.Tensor  # (H,)
    layer: int
    site: Site
    strength: float
    layers_path: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.strength):
            raise ValueError(f"steering strength must be finite, got {self.strength!r}")


def _steer(model: nn.Module, steering: Steering | None, positions: int) -> Any:
    if steering is None:
        return nullcontext()
    delta = steering.strength * steering.vector
    return add_at_site(model, steering.layer, steering.site, delta, steering.layers_path, positions=positions)


def _forward(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, use_cache: bool
) -> Any:
    # Without a cache object and with use_cache, the model builds the cache type it needs (for
    # example sliding-window layers).
    return model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=use_cache,
        logits_to_keep=1,
    )


@torch.inference_mode()
def _generate_batch(
    model: nn.Module,
    token_lists: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_ids: set[int],
    steering: Steering | None,
    use_cache: bool,
) -> list[list[int]]:
    """Generate greedily for one left-padded batch and return each row's new tokens (cut after EOS)."""
    batch = left_pad(token_lists, list(range(len(token_lists))), model_device(model))
    ids, mask, positions = batch.input_ids, batch.attention_mask, batch.position_ids
    rows = ids.shape[0]
    generated = torch.empty(rows, 0, dtype=torch.long, device=ids.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=ids.device)
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=ids.device)
    cache = None

    for step in range(max_new_tokens):
        if step == 0 or not use_cache:
            # The whole sequence: steer the last prompt position and the ``step`` generated ones.
            with _steer(model, steering, positions=step + 1):
                out = _forward(model, ids, mask, positions, None, use_cache)
        else:
            with _steer(model, steering, positions=1):
                out = _forward(model, ids[:, -1:], mask, positions[:, -1:], cache, True)
        cache = out.cache if use_cache else None
        next_token = out.logits[:, -1, :].argmax(-1)  # (B,)
        generated = torch.cat([generated, next_token.unsqueeze(1)], dim=1)
        finished |= torch.isin(next_token, eos)
        if bool(finished.all()):
            break
        ids = torch.cat([ids, next_token.unsqueeze(1)], dim=1)
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype, device=mask.device)], dim=1)
        positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)

    out_tokens = []
    for row in generated.tolist():
        cut = next((k + 1 for k, token in enumerate(row) if token in eos_ids), len(row))
        out_tokens.append(row[:cut])
    return out_tokens


def generate_greedy(
    model: nn.Module,
    token_lists: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_ids: Sequence[int] = (),
    steering: Steering | None = None,
    batch_size: int = 8,
    use_cache: bool = True,
) -> list[list[int]]:
    """Return the greedy continuation of each prompt, in input order, under ``steering`` if given.

    Each continuation stops after the first token in ``eos_ids`` (which it includes) or after
    ``max_new_tokens`` tokens. Prompts are batched in input order, ``batch_size`` at a time.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    results: list[list[int]] = []
    for start in range(0, len(token_lists), batch_size):
        chunk = token_lists[start : start + batch_size]
        results += _generate_batch(model, chunk, max_new_tokens, set(eos_ids), steering, use_cache)
    return results
