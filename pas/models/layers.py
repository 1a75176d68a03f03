"""Decoder-layer and steering-site lookup across model families and peft wrappers."""

from __future__ import annotations

from typing import Literal

from torch import nn

from pas.errors import UserError

Site = Literal["residual", "attn", "mlp", "post_attn_norm"]
SITES: tuple[str, ...] = ("residual", "attn", "mlp", "post_attn_norm")

# Child names of each site inside one decoder block, first match wins. Llama, Mistral, Qwen2,
# Gemma and Phi-3 use the first names; GPT-2 uses attn/ln_2; GPT-NeoX uses attention.
_SITE_CHILDREN: dict[str, tuple[str, ...]] = {
    "attn": ("self_attn", "attn", "attention", "self_attention"),
    "mlp": ("mlp", "feed_forward"),
    "post_attn_norm": ("post_attention_layernorm", "ln_2", "pre_feedforward_layernorm"),
}


class LayerLookupError(UserError, ValueError):
    """A layer index, site or layer path does not exist in the model."""


def _get_path(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            raise LayerLookupError(f"model has no attribute {part!r} on the path {path!r}")
        module = getattr(module, part)
    return module


def _num_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None)


def find_decoder_layers(model: nn.Module, layers_path: str | None = None) -> nn.ModuleList:
    """Return the list of decoder blocks, by ``layers_path`` or by structure.

    Without a path, the largest ``nn.ModuleList`` whose length equals the config's number of
    hidden layers is taken, which finds ``model.layers``, ``transformer.h``, ``gpt_neox.layers``
    and the same lists under a peft wrapper.
    """
    if layers_path:
        found = _get_path(model, layers_path)
        if not isinstance(found, nn.ModuleList):
            raise LayerLookupError(f"model.layers_path={layers_path!r} is a {type(found).__name__}, not a ModuleList")
        return found
    expected = _num_layers(model)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (expected is None or len(module) == expected)
    ]
    # Nested lists (for example a vision tower) also match by length, so prefer the shortest path,
    # which is the text decoder in the supported families.
    candidates.sort(key=lambda pair: pair[0].count("."))
    if not candidates:
        raise LayerLookupError(
            f"could not find the decoder layers of {type(model).__name__} (expected a ModuleList of "
            f"{expected} blocks); set model.layers_path to the dotted path of that list, for example "
            "model.layers_path=model.layers"
        )
    return candidates[0][1]


def check_layer(layer: int, num_layers: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
        raise LayerLookupError(
            f"layer {layer!r} is out of range: the model has {num_layers} decoder layers, "
            f"numbered 0 to {num_layers - 1}; pick layers in that range"
        )


def find_site_module(model: nn.Module, layer: int, site: Site, layers_path: str | None = None) -> nn.Module:
    """Return the module whose output is the activation at ``site`` of decoder block ``layer``.

    ``residual`` is the block itself (its output is ``hidden_states[layer + 1]``); the other
    sites are the block's self-attention, MLP and post-attention norm.
    """
    blocks = find_decoder_layers(model, layers_path)
    check_layer(layer, len(blocks))
    block = blocks[layer]
    if site == "residual":
        return block
    if site not in _SITE_CHILDREN:
        raise LayerLookupError(f"unknown steering site {site!r}; use one of {list(SITES)}")
    for name in _SITE_CHILDREN[site]:
        child = getattr(block, name, None)
        if isinstance(child, nn.Module):
            return child
    children = [name for name, _ in block.named_children()]
    raise LayerLookupError(
        f"site {site!r} not found in {type(block).__name__}: looked for {list(_SITE_CHILDREN[site])}, "
        f"the block has {children}"
    )
