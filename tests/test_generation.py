"""Steered greedy generation: KV cache, batching, zero strength and a by-hand reference loop."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pas.models.layers import find_decoder_layers
from pas.steering.generation import Steering, generate_greedy
from tests.families import HIDDEN, VOCAB, tiny_model

FAMILIES = ["llama", "gpt2", "mistral", "qwen3"]
NEW_TOKENS = 6


def _prompts() -> list[list[int]]:
    """Return prompts of ragged lengths, several longer than the 6-token sliding window."""
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(3, VOCAB - 3, (n,), generator=generator).tolist() for n in (3, 11, 7, 14, 5)]


def _steering(strength: float, site: str = "residual") -> Steering:
    vector = torch.randn(HIDDEN, generator=torch.Generator().manual_seed(1))
    return Steering(vector / vector.norm(), layer=1, site=site, strength=strength)  # type: ignore[arg-type]


def _reference(model: nn.Module, prompt: list[int], steering: Steering) -> list[int]:
    """Generate one prompt by hand: a full pass per token, the block output shifted from the last prompt position."""
    block = find_decoder_layers(model)[steering.layer]
    start = len(prompt) - 1

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[:, start:] += steering.strength * steering.vector
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    tokens = list(prompt)
    handle = block.register_forward_hook(hook)
    try:
        for _ in range(NEW_TOKENS):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([tokens])).logits
            tokens.append(int(logits[0, -1].argmax()))
    finally:
        handle.remove()
    return tokens[len(prompt) :]


@pytest.mark.parametrize("family", FAMILIES)
def test_cache_and_batching_give_same_tokens(family: str) -> None:
    model = tiny_model(family)
    prompts = _prompts()
    steering = _steering(8.0)
    reference = generate_greedy(model, prompts, NEW_TOKENS, steering=steering, batch_size=1, use_cache=False)
    for batch_size in (2, len(prompts)):
        for use_cache in (True, False):
            got = generate_greedy(
                model, prompts, NEW_TOKENS, steering=steering, batch_size=batch_size, use_cache=use_cache
            )
            assert got == reference, (batch_size, use_cache)
    unsteered = generate_greedy(model, prompts, NEW_TOKENS, batch_size=len(prompts))
    assert unsteered != reference  # the vector changes some tokens, so the comparisons above can fail


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_steered_tokens_match_reference_loop(family: str) -> None:
    model = tiny_model(family)
    steering = _steering(8.0)
    prompts = _prompts()
    got = generate_greedy(model, prompts, NEW_TOKENS, steering=steering, batch_size=3)
    for prompt, tokens in zip(prompts, got):
        assert tokens == _reference(model, prompt, steering)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_zero_strength_equals_unsteered(family: str) -> None:
    model = tiny_model(family)
    prompts = _prompts()
    unsteered = generate_greedy(model, prompts, NEW_TOKENS, batch_size=2)
    for site in ("residual", "attn", "mlp", "post_attn_norm"):
        assert generate_greedy(model, prompts, NEW_TOKENS, steering=_steering(0.0, site), batch_size=2) == unsteered


def test_other_sites_agree_with_and_without_cache() -> None:
    model = tiny_model("llama")
    prompts = _prompts()
    for site in ("attn", "mlp", "post_attn_norm"):
        steering = _steering(8.0, site)
        cached = generate_greedy(model, prompts, NEW_TOKENS, steering=steering, batch_size=len(prompts))
        plain = generate_greedy(model, prompts, NEW_TOKENS, steering=steering, batch_size=1, use_cache=False)
        assert cached == plain, site


def test_stops_after_end_token() -> None:
    model = tiny_model("llama")
    prompts = _prompts()
    free = generate_greedy(model, prompts, NEW_TOKENS, batch_size=len(prompts))
    stop = free[1][2]
    cut = generate_greedy(model, prompts, NEW_TOKENS, eos_ids=[stop], batch_size=len(prompts))
    assert cut[1] == free[1][: free[1].index(stop) + 1]
    for full, short in zip(free, cut):
        assert full[: len(short)] == short


def test_rejects_bad_arguments() -> None:
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        generate_greedy(model, _prompts(), 0)
    with pytest.raises(ValueError, match="strength must be finite"):
        _steering(float("nan"))
