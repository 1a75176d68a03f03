from __future__ import annotations

import pytest
import torch

from pas.data.prompts import PromptFormat, render_prompt
from pas.evaluation.scoring import last_logits_full, letter_token_ids, scores_from_logits, tokenize
from pas.steering.engines import NaiveEngine, PrefixCacheEngine, make_engine
from pas.steering.hooks import add_at_site
from tests.helpers import TINY_MODELS, make_items, tiny_tokenizer


def _prompts(n: int) -> list[list[int]]:
    tokenizer = tiny_tokenizer()
    texts = [render_prompt(item, PromptFormat()) for item in make_items(n)]
    return tokenize(tokenizer, texts, add_special_tokens=True)


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_cached_equals_naive_under_steering(family: str) -> None:
    model = TINY_MODELS[family]()
    lists = _prompts(9)
    naive = NaiveEngine(model, lists, batch_size=4)
    cached = PrefixCacheEngine(model, lists, batch_size=4)
    letter_ids = letter_token_ids(tiny_tokenizer(), 3)
    generator = torch.Generator().manual_seed(1)
    for layer in range(model.config.num_hidden_layers):
        for strength in (0.0, 1.0, 8.0):
            delta = strength * torch.randn(32, generator=generator)

            def context(layer: int = layer, delta: torch.Tensor = delta):  # noqa: ANN202
                return add_at_site(model, layer, "residual", delta)

            reference = naive.logits(context)
            fast = cached.logits(context)
            torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)
            preds_fast = [int(s.argmax()) for s in scores_from_logits(fast, letter_ids, [3] * 9)]
            preds_ref = [int(s.argmax()) for s in scores_from_logits(reference, letter_ids, [3] * 9)]
            assert preds_fast == preds_ref


def test_cached_engine_is_reusable() -> None:
    model = TINY_MODELS["llama"]()
    lists = _prompts(5)
    cached = PrefixCacheEngine(model, lists, batch_size=2)
    first = cached.logits()
    with_hook = cached.logits(lambda: add_at_site(model, 1, "residual", torch.ones(32)))
    again = cached.logits()
    assert torch.equal(first, again)
    assert not torch.allclose(first, with_hook)
    torch.testing.assert_close(first, last_logits_full(model, lists, 5), rtol=1e-4, atol=1e-5)


def test_unknown_engine_name() -> None:
    with pytest.raises(ValueError, match="unknown sweep engine 'fast'"):
        make_engine("fast", TINY_MODELS["llama"](), _prompts(2), 2)
