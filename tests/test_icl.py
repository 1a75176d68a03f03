from __future__ import annotations

import pytest

from pas.data.prompts import PromptBuilder, PromptFormat, render_prompt
from pas.data.schema import DataError
from pas.evaluation.icl import ICLPromptBuilder, select_exemplars
from tests.helpers import make_items, tiny_tokenizer


def test_exemplars_come_from_wrong_items() -> None:
    items = make_items(30)
    predictions = [(item.target + (i % 2)) % item.n_choices for i, item in enumerate(items)]
    wrong_ids = {item.id for item, pred in zip(items, predictions) if pred != item.target}
    chosen = select_exemplars(items, predictions, 4, seed=1)
    assert len(chosen) == 4
    assert {item.id for item in chosen} <= wrong_ids
    assert select_exemplars(items, predictions, 4, seed=1) == chosen
    assert select_exemplars(items, predictions, 4, seed=2) != chosen


def test_fewer_wrong_items_than_k(caplog: pytest.LogCaptureFixture) -> None:
    items = make_items(5)
    predictions = [item.target for item in items]
    predictions[0] = (predictions[0] + 1) % 3
    assert [e.id for e in select_exemplars(items, predictions, 4, seed=0)] == [items[0].id]
    assert "instead of 4" in caplog.text


def test_prompt_shows_exemplars_with_letters() -> None:
    items = make_items(6)
    builder = ICLPromptBuilder(PromptFormat(), tiny_tokenizer(), items[:2], max_tokens=10_000)
    text = builder.prompt(items[5])
    plain = render_prompt(items[5], PromptFormat())
    assert text.endswith(plain)
    assert text.count("Answer:") == 3
    assert f"Answer: {items[0].target_letter}\n\n" in text


def test_item_is_never_its_own_exemplar() -> None:
    items = make_items(4)
    builder = ICLPromptBuilder(PromptFormat(), tiny_tokenizer(), items[:2], max_tokens=10_000)
    text = builder.prompt(items[0])
    assert text.count(items[0].question) == 1
    assert builder.used == [1]


def test_budget_drops_exemplars_not_prompt() -> None:
    items = make_items(8)
    tokenizer = tiny_tokenizer()
    plain = PromptBuilder(PromptFormat(), tokenizer)
    own = len(plain.encode_prompts([items[7]])[0])
    builder = ICLPromptBuilder(PromptFormat(), tokenizer, items[:5], max_tokens=own + 30)
    text = builder.prompt(items[7])
    assert len(builder.encode([text])[0]) <= own + 30
    assert text.endswith(render_prompt(items[7], PromptFormat()))
    assert builder.used[0] < 5


def test_prompt_longer_than_budget() -> None:
    items = make_items(3)
    builder = ICLPromptBuilder(PromptFormat(), tiny_tokenizer(), items[:1], max_tokens=5)
    with pytest.raises(DataError, match="more than icl.max_tokens=5"):
        builder.prompt(items[2])


def test_chat_exemplars_are_turns() -> None:
    items = make_items(3)
    builder = ICLPromptBuilder(PromptFormat(chat_template=True), tiny_tokenizer(), items[:1], max_tokens=10_000)
    text = builder.prompt(items[2])
    assert text.startswith("<|user|>")
    assert f"<|assistant|>{items[0].target_letter}</s><|user|>" in text
    assert text.endswith("<|assistant|>")
