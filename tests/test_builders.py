from __future__ import annotations

import pytest

from pas.data.prompts import PromptFormat, render_answer, render_prompt
from pas.data.schema import MCItem
from pas.steering.builders import EmptyContrastError, TextRef, build_contrast_sets

ITEMS = [
    MCItem(id="a", question="Is ice cold?", choices=("yes", "no"), target=0),
    MCItem(id="b", question="Is fire cold?", choices=("yes", "no", "sometimes"), target=1),
    MCItem(id="c", question="Is snow white?", choices=("no", "yes"), target=1),
    MCItem(id="d", question="Two plus two?", choices=("three", "four", "five"), target=1),
]
# The model answers a and c correctly, picks "yes" for b and "five" for d.
PREDICTIONS = [0, 0, 1, 2]


def test_pasf_uses_full_prompts() -> None:
    sets = build_contrast_sets(ITEMS, PREDICTIONS, ["pasf"])
    assert sets["pasf"].positive == (TextRef(0), TextRef(2))
    assert sets["pasf"].negative == (TextRef(1), TextRef(3))


def test_ipas_all_uses_correct_and_chosen_answers() -> None:
    sets = build_contrast_sets(ITEMS, PREDICTIONS, ["ipas_all"])
    assert sets["ipas_all"].positive == (TextRef(0, 0), TextRef(2, 1))
    assert sets["ipas_all"].negative == (TextRef(1, 0), TextRef(3, 2))


def test_ipas_wrong_only_pairs_wrong_items() -> None:
    sets = build_contrast_sets(ITEMS, PREDICTIONS, ["ipas_wrong_only"])
    assert sets["ipas_wrong_only"].positive == (TextRef(1, 1), TextRef(3, 1))
    assert sets["ipas_wrong_only"].negative == (TextRef(1, 0), TextRef(3, 2))


def test_rendered_texts_match_refs() -> None:
    fmt = PromptFormat()
    sets = build_contrast_sets(ITEMS, PREDICTIONS, ["pasf", "ipas_wrong_only"])
    prompt = render_prompt(ITEMS[sets["pasf"].positive[0].item], fmt)
    assert prompt.startswith("Is ice cold?\nA: yes\nB: no\n")
    assert prompt.endswith("Answer:")
    ref = sets["ipas_wrong_only"].positive[1]
    assert render_answer(ITEMS[ref.item], ref.choice, fmt) == "Two plus two?\nAnswer: four"
    ref = sets["ipas_wrong_only"].negative[1]
    assert render_answer(ITEMS[ref.item], ref.choice, fmt) == "Two plus two?\nAnswer: five"


def test_all_correct_leaves_negatives_empty() -> None:
    targets = [item.target for item in ITEMS]
    sets = build_contrast_sets(ITEMS, targets, ["pasf", "ipas_all", "ipas_wrong_only"])
    assert sets["pasf"].negative == ()
    assert sets["ipas_wrong_only"].positive == ()
    with pytest.raises(EmptyContrastError, match="pasf has no negative texts"):
        sets["pasf"].check_nonempty(correct=4, wrong=0)


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="unknown PAS variants"):
        build_contrast_sets(ITEMS, PREDICTIONS, ["caa"])
