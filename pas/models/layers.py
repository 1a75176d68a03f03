"""Decoder-layer and steering-site lookup across model families and peft wrappers.

Sites of decoder block ``L``:

- ``residual``: the block's output, ``hidden_states[L + 1]`` in transformers' numbering.
- ``attn``: the output of the block's self-attention module, before any dropout, norm or
  residual add that follows it.
- ``mlp``: the output of the block's MLP module, likewise.
- ``post_attn_norm``: the normalized hidden state that enters the MLP, computed from the residual
  stream after attention. That is Llama's ``post_attention_layernorm`` and GPT-2's ``ln_2``. In
  Gemma 2 and Gemma 3 it is ``pre_feedforward_layernorm``, because their
  ``post_attention_layernorm`` normalizes the attention output before the residual add. Blocks
  whose MLP does not read a normalized post-attention stream (GPT-NeoX with parallel residual,
  OLMo 2) have no such site, and asking for it raises ``LayerLookupError``.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from pas.errors import UserError

Site = Literal["residual", "attn", "mlp", "post_attn_norm"]
SITES: tuple[str, ...] = ("residual", "attn", "mlp", "post_attn_norm")

# Child names of the attention and MLP modules inside one decoder block, first match wins. Llama,
# Mistral, Qwen, Gemma, Phi-3 and OLMo use self_attn/mlp; GPT-2 uses attn; GPT-NeoX uses attention.
_ATTENTION_CHILDREN = ("self_attn", "attn", "attention", "self_attention")
_MLP_CHILDREN = ("mlp", "feed_forward")


class LayerLookupError(UserError, ValueError):
    """A layer index, site or layer path does not exist in the model."""


def as_module(model: object) -> nn.Module:
    """Return ``model`` if it is an ``nn.Module``, else the module in its ``model`` field (a LoadedModel)."""
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    raise TypeError(f"expected a torch model or a LoadedModel, got {type(model).__name__}")


def _unwrap(model: nn.Module) -> nn.Module:
    """Return the transformers model under a peft wrapper, or ``model`` itself."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def _get_path(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            raise LayerLookupError(f"model has no attribute {part!r} on the path {path!r}")
        module = getattr(module, part)
    return module


def _text_config(model: nn.Module) -> object | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _num_layers(model: nn.Module) -> int | None:
    text = _text_config(model)
    return getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None)


def model_hidden_size(model: nn.Module) -> int | None:
    """Return the text config's hidden size, or None for a model without a config."""
    size = getattr(_text_config(as_module(model)), "hidden_size", None)
    return int(size) if size is not None else None


def family_name(model: nn.Module) -> str:
    """Return the model family for messages: the text config's ``model_type``, else the class name."""
    model = as_module(model)
    model_type = getattr(_text_config(model), "model_type", None)
    return str(model_type) if model_type else type(_unwrap(model)).__name__


def _is_block_list(module: nn.Module) -> bool:
    """Tell whether ``module`` is a non-empty ModuleList of blocks that contain an attention module."""
    if not isinstance(module, nn.ModuleList) or len(module) == 0:
        return False
    return any(isinstance(getattr(module[0], name, None), nn.Module) for name in _ATTENTION_CHILDREN)


def _layers_by_path(model: nn.Module, layers_path: str) -> nn.ModuleList:
    # A path such as "model.layers" is written against the transformers model, so it is also tried
    # under a peft wrapper, whose own attributes add "base_model.model." in front.
    try:
        found = _get_path(model, layers_path)
    except LayerLookupError:
        base = _unwrap(model)
        if base is model:
            raise
        found = _get_path(base, layers_path)
    if not isinstance(found, nn.ModuleList):
        raise LayerLookupError(f"model.layers_path={layers_path!r} is a {type(found).__name__}, not a ModuleList")
    return found


def find_decoder_layers(model: nn.Module, layers_path: str | None = None) -> nn.ModuleList:
    """Return the list of decoder blocks, by ``layers_path`` or by structure.

    Without a path, the candidates are the ``nn.ModuleList``s whose blocks contain an attention
    module and whose length equals the text config's number of hidden layers (or, when no list has
    such blocks, every list of that length). Of those, the one with the shortest dotted path is
    taken. This finds ``model.layers``, ``transformer.h``, ``gpt_neox.layers`` and
    ``model.language_model.layers`` (text layers of multimodal Gemma 3, whose vision tower's layers
    sit deeper), also under a peft wrapper.
    """
    model = as_module(model)
    if layers_path:
        return _layers_by_path(model, layers_path)
    expected = _num_layers(model)
    lists = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    candidates = [
        (name, module)
        for name, module in lists
        if _is_block_list(module) and (expected is None or len(module) == expected)
    ]
    if not candidates and expected is not None:
        # Blocks whose attention module has another name still match by length alone.
        candidates = [(name, module) for name, module in lists if len(module) == expected]
    candidates.sort(key=lambda pair: pair[0].count("."))
    if candidates and (len(candidates) == 1 or candidates[0][0].count(".") < candidates[1][0].count(".")):
        return candidates[0][1]
    found = [f"{name} ({len(module)})" for name, module in lists if len(module) > 0]
    if candidates:
        size = f"{expected} " if expected is not None else ""
        reason = f"several lists of {size}blocks are equally likely: {[name for name, _ in candidates]}"
    else:
        reason = f"no ModuleList of {expected if expected is not None else 'attention'} blocks was found"
    raise LayerLookupError(
        f"could not find the decoder layers of {type(_unwrap(model)).__name__} ({family_name(model)}): "
        f"{reason}. Set model.layers_path (layers_path= in the Python API) to the dotted path of that "
        f"list, for example model.layers_path=model.layers. ModuleLists in this model, with their "
        f"lengths: {found or 'none'}"
    )


def check_layer(layer: int, num_layers: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
        raise LayerLookupError(
            f"layer {layer!r} is out of range: the model has {num_layers} decoder layers, "
            f"numbered 0 to {num_layers - 1}; pick layers in that range"
        )


def _first_child(block: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if isinstance(getattr(block, name, None), nn.Module)), None)


def _post_attn_norm_child(block: nn.Module) -> tuple[str | None, str]:
    """Return the child whose output is the normalized MLP input, or None and the reason it is missing."""
    if getattr(block, "use_parallel_residual", False):
        return None, (
            "attention and MLP run in parallel on the block input (use_parallel_residual=True), so the "
            "norm before the MLP reads the block input, not the stream after attention"
        )
    if _first_child(block, ("pre_feedforward_layernorm",)):
        return "pre_feedforward_layernorm", ""
    if _first_child(block, ("post_feedforward_layernorm",)):
        return None, (
            "the block normalizes the attention and MLP outputs before each residual add (post-norm), "
            "so the MLP reads the residual stream without a norm"
        )
    name = _first_child(block, ("post_attention_layernorm", "ln_2"))
    if name:
        return name, ""
    return None, "the block has no child named post_attention_layernorm, ln_2 or pre_feedforward_layernorm"


def site_child_name(block: nn.Module, site: Site) -> tuple[str | None, str]:
    """Return the name of the child of ``block`` that produces ``site``, or None and the reason.

    ``residual`` has no child (the block itself), so it returns ``("", "")``.
    """
    if site == "residual":
        return "", ""
    if site == "attn":
        name = _first_child(block, _ATTENTION_CHILDREN)
        return name, "" if name else f"the block has no child named any of {list(_ATTENTION_CHILDREN)}"
    if site == "mlp":
        name = _first_child(block, _MLP_CHILDREN)
        return name, "" if name else f"the block has no child named any of {list(_MLP_CHILDREN)}"
    if site == "post_attn_norm":
        return _post_attn_norm_child(block)
    raise LayerLookupError(f"unknown steering site {site!r}; use one of {list(SITES)}")


def available_sites(model: nn.Module, layers_path: str | None = None) -> list[str]:
    """Return the steering sites that the model's decoder blocks have, in the order of ``SITES``."""
    block = find_decoder_layers(model, layers_path)[0]
    return [site for site in SITES if site_child_name(block, site)[0] is not None]  # type: ignore[arg-type]


def find_site_module(model: nn.Module, layer: int, site: Site, layers_path: str | None = None) -> nn.Module:
    """Return the module whose output is the activation at ``site`` of decoder block ``layer``.

    ``residual`` is the block itself (its output is ``hidden_states[layer + 1]``). The other
    sites are children of the block, chosen per family as the module docstring describes.
    """
    if site not in SITES:
        raise LayerLookupError(f"unknown steering site {site!r}; use one of {list(SITES)}")
    blocks = find_decoder_layers(model, layers_path)
    check_layer(layer, len(blocks))
    block = blocks[layer]
    name, reason = site_child_name(block, site)
    if name == "":
        return block
    if name is None:
        family = family_name(model)
        present = [s for s in SITES if site_child_name(block, s)[0] is not None]  # type: ignore[arg-type]
        raise LayerLookupError(
            f"site {site!r} does not exist in {family} ({type(block).__name__}): {reason}. "
            f"Sites that {family} has: {present}"
        )
    return getattr(block, name)
