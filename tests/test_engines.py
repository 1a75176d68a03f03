from __future__ import annotations

import pytest
import torch

from pas.data.prompts import PromptFormat, render_prompt
from pas.evaluation.scoring import last_logits_full, letter_token_ids, scores_from_logits, tokenize
from pas.steering.engines import FastEngine, NaiveEngine, make_engine
from pas.steering.hooks import add_at_site
from tests.helpers import TINY_MODELS, make_items, tiny_tokenizer

SITES = ["residual", "attn", "mlp", "post_attn_norm"]


def _prompts(n: int, prefix_words: int = 0) -> list[list[int]]:
    """Tokenized prompts of ragged lengths; ``prefix_words`` prepends an ICL-like block to some of them."""
    tokenizer = tiny_tokenizer()
    texts = []
    for k, item in enumerate(make_items(n)):
        prefix = " ".join(["example question and its answer"] * (prefix_words * (k % 3))) + "\n"
        texts.append(prefix + render_prompt(item, PromptFormat()))
    return tokenize(tokenizer, texts, add_special_tokens=True)


def _letters() -> list[list[int]]:
    return letter_token_ids(tiny_tokenizer(), 3)


def _preds(logits: torch.Tensor, positions: list[list[int]]) -> list[int]:
    return [int(s.argmax()) for s in scores_from_logits(logits, positions, [3] * logits.shape[0])]


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
@pytest.mark.parametrize("site", SITES)
def test_fast_equals_naive_per_item_loop(family: str, site: str) -> None:
    model = TINY_MODELS[family]()
    lists = _prompts(7, prefix_words=4)
    naive = NaiveEngine(model, lists, batch_size=1, letter_ids=_letters())
    fast = FastEngine(model, lists, batch_size=3, letter_ids=_letters(), configs_per_pass=2)
    generator = torch.Generator().manual_seed(1)
    for layer in range(model.config.num_hidden_layers):
        deltas = torch.randn(3, 32, generator=generator) * torch.tensor([0.0, 2.0, 32.0]).unsqueeze(1)
        reference = naive.steered_logits(layer, site, deltas)
        got = fast.steered_logits(layer, site, deltas)
        assert got.shape == (3, 7, len(naive.keep))
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)
        for k in range(3):
            assert _preds(got[k], fast.letter_positions) == _preds(reference[k], naive.letter_positions)


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_zero_strength_reproduces_unsteered(family: str) -> None:
    model = TINY_MODELS[family]()
    lists = _prompts(7)
    fast = FastEngine(model, lists, batch_size=3, letter_ids=_letters())
    unsteered = fast.unsteered_logits()
    full = last_logits_full(model, lists, batch_size=1)[:, fast.keep]
    torch.testing.assert_close(unsteered, full, rtol=1e-4, atol=1e-5)
    for layer in (0, 2, 3):
        zero = fast.steered_logits(layer, "residual", torch.zeros(2, 32))
        torch.testing.assert_close(zero[0], unsteered, rtol=1e-4, atol=1e-5)
        assert _preds(zero[1], fast.letter_positions) == _preds(unsteered, fast.letter_positions)


def test_fast_engine_leaves_model_and_cache_unchanged() -> None:
    model = TINY_MODELS["llama"]()
    lists = _prompts(5)
    fast = FastEngine(model, lists, batch_size=2, letter_ids=_letters())
    lengths = [p.cache.get_seq_length() for p in fast.prepared]
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    first = fast.steered_logits(2, "residual", torch.ones(3, 32))
    second = fast.steered_logits(2, "residual", torch.ones(3, 32))
    assert torch.equal(first, second)
    assert [p.cache.get_seq_length() for p in fast.prepared] == lengths
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()] == hooks
    assert all("forward" not in vars(block) for block in model.model.layers)
    assert "forward" not in vars(model.lm_head)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([lists[0]])).logits
    assert logits.shape[-1] == 300


def test_steering_changes_predictions_somewhere() -> None:
    model = TINY_MODELS["gpt2"]()
    fast = FastEngine(model, _prompts(9), batch_size=4, letter_ids=_letters())
    strong = fast.steered_logits(1, "residual", 50 * torch.randn(1, 32, generator=torch.Generator().manual_seed(0)))
    assert not torch.allclose(strong[0], fast.unsteered_logits())


def test_naive_engine_matches_manual_hook() -> None:
    model = TINY_MODELS["llama"]()
    lists = _prompts(4)
    naive = NaiveEngine(model, lists, batch_size=2, letter_ids=_letters())
    delta = torch.randn(32)
    with add_at_site(model, 1, "mlp", delta):
        manual = last_logits_full(model, lists, batch_size=4)[:, naive.keep]
    torch.testing.assert_close(naive.steered_logits(1, "mlp", delta.unsqueeze(0))[0], manual, rtol=1e-4, atol=1e-5)


def test_unknown_engine_name() -> None:
    with pytest.raises(ValueError, match="unknown sweep engine 'cached'"):
        make_engine("cached", TINY_MODELS["llama"](), _prompts(2), 2, _letters())
