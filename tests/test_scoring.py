from __future__ import annotations

import pytest
import torch

from pas.data.prompts import PromptFormat, render_prompt
from pas.evaluation.scoring import (
    ScoringError,
    last_logits_full,
    left_pad,
    length_batches,
    letter_token_ids,
    scores_from_logits,
    tokenize,
)
from tests.helpers import TINY_MODELS, make_items, tiny_tokenizer


def test_letter_ids_distinct_per_option() -> None:
    ids = letter_token_ids(tiny_tokenizer(), 8)
    flat = [token for variants in ids for token in variants]
    assert len(flat) == len(set(flat))
    assert all(1 <= len(variants) <= 2 for variants in ids)


def test_letter_ids_include_space_variant() -> None:
    tokenizer = tiny_tokenizer()
    ids = letter_token_ids(tokenizer, 2)
    assert tokenizer.encode(" A", add_special_tokens=False)[0] in ids[0]
    assert tokenizer.encode("A", add_special_tokens=False)[0] in ids[0]


def test_left_pad_last_column_is_last_token() -> None:
    lists = [[5, 6, 7], [8], [9, 10]]
    batch = left_pad(lists, [0, 1, 2], torch.device("cpu"))
    assert batch.input_ids[:, -1].tolist() == [7, 8, 10]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 1]]


def test_length_batches_cover_every_index() -> None:
    lists = [[1] * n for n in (3, 9, 1, 5, 7)]
    batches = length_batches(lists, 2)
    assert sorted(i for b in batches for i in b) == list(range(5))
    assert batches[0] == [1, 4]


def test_length_batches_rejects_zero() -> None:
    with pytest.raises(ScoringError, match="batch_size"):
        length_batches([[1]], 0)


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_equals_unbatched(family: str, padding_side: str) -> None:
    model = TINY_MODELS[family]()
    tokenizer = tiny_tokenizer(padding_side)
    items = make_items(7)
    texts = [render_prompt(item, PromptFormat()) for item in items]
    lists = tokenize(tokenizer, texts, add_special_tokens=True)
    assert len({len(ids) for ids in lists}) > 1, "the test needs ragged lengths"
    batched = last_logits_full(model, lists, batch_size=4)
    one_by_one = torch.cat([last_logits_full(model, [ids], batch_size=1) for ids in lists])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        plain = torch.stack([model(input_ids=torch.tensor([ids])).logits[0, -1] for ids in lists])
    torch.testing.assert_close(batched, plain, rtol=1e-4, atol=1e-5)


def test_scores_only_compete_within_choices() -> None:
    letter_ids = [[10], [11], [12], [13]]
    logits = torch.zeros(2, 20)
    logits[:, 13] = 50.0  # "D" is by far the most likely letter
    logits[0, 11] = 1.0
    scores = scores_from_logits(logits, letter_ids, [3, 4])
    assert scores[0].shape == (3,)
    assert int(scores[0].argmax()) == 1
    assert int(scores[1].argmax()) == 3
    torch.testing.assert_close(scores[0].exp().sum(), torch.tensor(1.0))


def test_scores_sum_token_variants() -> None:
    letter_ids = [[1, 2], [3]]
    logits = torch.full((1, 5), -10.0)
    logits[0, 1] = 0.0
    logits[0, 2] = 0.0
    logits[0, 3] = 0.5
    scores = scores_from_logits(logits, letter_ids, [2])
    # Two variants at logit 0 outweigh one at 0.5: log(2) > 0.5.
    assert int(scores[0].argmax()) == 0
