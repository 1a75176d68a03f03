from __future__ import annotations

import pytest
from peft import LoraConfig, get_peft_model
from torch import nn

from pas.models.layers import LayerLookupError, find_decoder_layers, find_site_module
from tests.helpers import TINY_MODELS


@pytest.mark.parametrize(("family", "block"), [("llama", "LlamaDecoderLayer"), ("gpt2", "GPT2Block")])
def test_finds_decoder_layers(family: str, block: str) -> None:
    model = TINY_MODELS[family]()
    layers = find_decoder_layers(model)
    assert len(layers) == 4
    assert type(layers[0]).__name__ == block


@pytest.mark.parametrize(
    ("family", "site", "name"),
    [
        ("llama", "attn", "LlamaAttention"),
        ("llama", "mlp", "LlamaMLP"),
        ("llama", "post_attn_norm", "LlamaRMSNorm"),
        ("gpt2", "attn", "GPT2Attention"),
        ("gpt2", "mlp", "GPT2MLP"),
        ("gpt2", "post_attn_norm", "LayerNorm"),
    ],
)
def test_site_modules(family: str, site: str, name: str) -> None:
    model = TINY_MODELS[family]()
    assert type(find_site_module(model, 1, site)).__name__ == name  # type: ignore[arg-type]


def test_peft_wrapped_model() -> None:
    base = TINY_MODELS["llama"]()
    wrapped = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert find_decoder_layers(wrapped)[2] is base.model.layers[2]


def test_layer_out_of_range() -> None:
    with pytest.raises(LayerLookupError, match="layer 4 is out of range: the model has 4 decoder layers"):
        find_site_module(TINY_MODELS["llama"](), 4, "residual")


def test_explicit_layers_path() -> None:
    model = TINY_MODELS["gpt2"]()
    assert find_decoder_layers(model, "transformer.h") is model.transformer.h
    with pytest.raises(LayerLookupError, match="no attribute 'blocks'"):
        find_decoder_layers(model, "transformer.blocks")


def test_unknown_structure_names_the_setting() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stack = nn.Sequential(nn.Linear(2, 2))

    with pytest.raises(LayerLookupError, match="model.layers_path"):
        find_decoder_layers(Odd())


def test_unknown_site() -> None:
    with pytest.raises(LayerLookupError, match="unknown steering site 'resid'"):
        find_site_module(TINY_MODELS["llama"](), 0, "resid")  # type: ignore[arg-type]
