from __future__ import annotations

from collections import Counter

import pytest

from pas.data.prompts import PromptFormat, render_answer, render_prompt, shuffle_choices
from pas.data.schema import DataError, MCItem
from tests.helpers import tiny_tokenizer


def _items(n: int, n_choices: int = 4) -> list[MCItem]:
    return [
        MCItem(id=f"item-{i}", question=f"Question {i}?", choices=tuple(f"c{k}" for k in range(n_choices)), target=0)
        for i in range(n)
    ]


def test_shuffle_is_deterministic() -> None:
    items = _items(20)
    first = [shuffle_choices(item, 7) for item in items]
    second = [shuffle_choices(item, 7) for item in items]
    assert first == second


def test_shuffle_differs_per_item() -> None:
    shuffled = [shuffle_choices(item, 7) for item in _items(60)]
    permutations = Counter(item.choices for item in shuffled)
    assert len(permutations) > 10
    # The target was always listed first; after the shuffle it lands on every letter.
    assert set(Counter(item.target for item in shuffled)) == {0, 1, 2, 3}


def test_shuffle_keeps_target_text() -> None:
    for item in _items(30, n_choices=5):
        shuffled = shuffle_choices(item, 3)
        assert shuffled.choices[shuffled.target] == item.choices[item.target]
        assert sorted(shuffled.choices) == sorted(item.choices)
        assert [item.choices[i] for i in shuffled.meta["original_order"]] == list(shuffled.choices)


def test_shuffle_depends_on_seed() -> None:
    items = _items(30)
    assert [shuffle_choices(i, 1).choices for i in items] != [shuffle_choices(i, 2).choices for i in items]


def test_render_plain_prompt() -> None:
    item = MCItem(id="x", question="Who?", choices=("Ann", "Bob"), target=1, context="Ann met Bob.")
    assert render_prompt(item, PromptFormat()) == (
        "Ann met Bob.\nWho?\nA: Ann\nB: Bob\nRespond with a single letter.\nAnswer:"
    )


def test_render_chat_prompt() -> None:
    item = MCItem(id="x", question="Who?", choices=("Ann", "Bob"), target=1)
    text = render_prompt(item, PromptFormat(chat_template=True), tiny_tokenizer())
    assert text == "<|user|>Who?\nA: Ann\nB: Bob\nRespond with a single letter.</s><|assistant|>"
    answer = render_answer(item, 1, PromptFormat(chat_template=True), tiny_tokenizer())
    assert answer == "<|user|>Who?</s><|assistant|>Bob"


def test_chat_prompt_without_template() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    item = MCItem(id="x", question="Who?", choices=("Ann", "Bob"), target=1)
    with pytest.raises(ValueError, match="chat_template"):
        render_prompt(item, PromptFormat(chat_template=True), tokenizer)


@pytest.mark.parametrize(
    ("choices", "target", "message"),
    [
        (("only",), 0, "2 to 26 choices"),
        (tuple(str(i) for i in range(27)), 0, "2 to 26 choices"),
        (("a", "b"), 2, "target must be an index in 0..1"),
        (("a", " "), 0, "empty strings"),
    ],
)
def test_item_validation(choices: tuple[str, ...], target: int, message: str) -> None:
    with pytest.raises(DataError, match=message):
        MCItem(id="bad", question="Q?", choices=choices, target=target)
