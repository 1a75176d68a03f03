"""Forward hooks that add a vector at one site or read the activation there.

Both act on the last sequence position of the module's output. Every batch this package builds is
left-padded, so the last position is the last real token of every row. During cached generation
the input is the single new position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from pas.errors import UserError
from pas.models.layers import Site, as_module, family_name, find_site_module, model_hidden_size


class SteeringShapeError(UserError, ValueError):
    """A steering vector's length does not match the model's hidden size."""


def _main_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_main(output: Any, tensor: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    return tensor


HALF_DTYPES = (torch.float16, torch.bfloat16)
# Steered half-precision states are clamped to this fraction of the dtype's largest value, which
# leaves room for the residual additions of later blocks before the final norm rescales the state.
# NOTE: the margin was checked on tiny Llama models only; blocks with very large outputs can still overflow.
HALF_CLAMP_FRACTION = 0.25


def add_steering(hidden: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Return ``hidden + delta`` in ``hidden``'s dtype, computed so that it cannot overflow.

    In float16 and bfloat16 the sum is taken in float32 and clamped to a quarter of the dtype's
    largest finite value, so a large strength saturates the state instead of turning it into inf
    (and the logits into NaN). Other dtypes add directly.
    """
    if hidden.dtype not in HALF_DTYPES:
        return hidden + delta.to(dtype=hidden.dtype)
    limit = torch.finfo(hidden.dtype).max * HALF_CLAMP_FRACTION
    return (hidden.float() + delta.float()).clamp(-limit, limit).to(hidden.dtype)


@contextmanager
def add_at_site(
    model: nn.Module,
    layer: int,
    site: Site,
    delta: torch.Tensor,
    layers_path: str | None = None,
    positions: int = 1,
) -> Iterator[None]:
    """Add ``delta`` to the output of ``site`` at ``layer``, at the last ``positions`` positions only.

    ``delta`` has shape ``(H,)`` or ``(positions, H)``. The output of the hooked module becomes
    ``h[:, -positions:] + delta``; every earlier position and every other module is unchanged.
    The hook is removed on exit, also on error. Blocks and modules that return a tuple get the
    vector added to the tuple's first element, the hidden states. ``model`` may also be a
    ``LoadedModel``.
    """
    model = as_module(model)
    module = find_site_module(model, layer, site, layers_path)
    hidden_size = model_hidden_size(model)
    if delta.ndim not in (1, 2) or (hidden_size is not None and delta.shape[-1] != hidden_size):
        raise SteeringShapeError(
            f"cannot add a vector of shape {tuple(delta.shape)} at layer {layer} of {family_name(model)}: "
            f"the last dimension must be {hidden_size}, the model's hidden size; use a vector fitted on this model"
        )

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        hidden = _main_tensor(output)  # (B, T, H)
        steered = hidden.clone()
        steered[:, -positions:, :] = add_steering(hidden[:, -positions:, :], delta.to(device=hidden.device))
        return _replace_main(output, steered)

    # Prepended so that hooks registered earlier (transformers records hidden_states through its
    # own forward hooks, and a capture hook may be open) see the steered output.
    handle = module.register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def capture_at_site(
    model: nn.Module,
    layers: Sequence[int],
    site: Site,
    store: dict[int, list[torch.Tensor]],
    layers_path: str | None = None,
) -> Iterator[None]:
    """Append the last-position output of ``site`` at each of ``layers`` to ``store[layer]`` per forward call.

    Each appended tensor has shape ``(B, H)``, is detached and kept in float32 on the model's device.
    """
    handles = []

    def make_hook(layer: int):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            store.setdefault(layer, []).append(_main_tensor(output)[:, -1, :].detach().float())

        return hook

    try:
        for layer in layers:
            module = find_site_module(model, layer, site, layers_path)
            handles.append(module.register_forward_hook(make_hook(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()
