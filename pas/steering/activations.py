"""Last-position activations read in the same batched pass that scores the letters."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pas.evaluation.scoring import iter_batches, last_position_logits, model_device
from pas.models.layers import Site
from pas.steering.hooks import capture_at_site


@torch.inference_mode()
def forward_and_capture(
    model: nn.Module,
    token_lists: Sequence[Sequence[int]],
    layers: Sequence[int],
    site: Site,
    batch_size: int,
    layers_path: str | None = None,
    with_logits: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Run batched forward passes and return last-position logits and activations in input order.

    Returns ``(logits, acts)`` with ``logits`` of shape ``(N, V)`` (``None`` without ``with_logits``)
    and ``acts`` of shape ``(N, len(layers), H)`` in float32: the output of ``site`` at each layer.
    """
    device = model_device(model)
    n = len(token_lists)
    logits_out: torch.Tensor | None = None
    acts_out: torch.Tensor | None = None
    for batch in iter_batches(token_lists, batch_size, device):
        store: dict[int, list[torch.Tensor]] = {}
        with capture_at_site(model, layers, site, store, layers_path):
            logits = last_position_logits(model, batch).float()
        acts = torch.stack([store[layer][0] for layer in layers], dim=1)  # (B, L, H)
        if acts_out is None:
            acts_out = torch.empty(n, len(layers), acts.shape[-1], device=acts.device)
        index = torch.tensor(batch.index, device=acts.device)
        acts_out[index] = acts
        if with_logits:
            if logits_out is None:
                logits_out = torch.empty(n, logits.shape[-1], device=logits.device)
            logits_out[index] = logits
    if acts_out is None:
        raise ValueError("forward_and_capture needs at least one text")
    return logits_out, acts_out
