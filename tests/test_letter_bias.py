from __future__ import annotations

import torch

from pas.data.prompts import PromptBuilder, PromptFormat
from pas.data.schema import MCItem
from pas.evaluation.letter_bias import check_letter_bias, letter_counts
from pas.evaluation.scoring import letter_token_ids, scores_from_logits
from pas.steering.engines import FastEngine
from tests.helpers import make_items, tiny_llama, tiny_tokenizer


def test_letter_counts() -> None:
    assert letter_counts([0, 2, 2, 1, 2]) == {"A": 1, "B": 1, "C": 3}


def test_flags_shift_to_always_correct_letter() -> None:
    targets = [1] * 12
    unsteered = [0, 2, 1, 0, 2, 0, 1, 2, 0, 2, 0, 1]
    steered = [1] * 12
    check = check_letter_bias(unsteered, steered, targets)
    assert check.flagged
    assert check.letter == "B"
    assert check.net_gain == 9
    assert check.constant_letter_acc == 1.0


def test_quiet_on_balanced_genuine_gain() -> None:
    targets = [0, 1, 2] * 6
    unsteered = [0, 0, 0] * 6  # always A: right on every third item
    steered = list(targets)
    steered[0] = 1  # one new mistake, so the gain is not perfect
    check = check_letter_bias(unsteered, steered, targets)
    assert check.net_gain > 0
    assert not check.flagged
    assert "does not account for the gain" in check.reason


def test_quiet_without_gain() -> None:
    check = check_letter_bias([0, 1, 2, 0], [1, 1, 1, 1], [0, 1, 2, 0])
    assert check.net_gain < 0
    assert not check.flagged


def test_real_letter_vector_is_flagged() -> None:
    """On a tiny model, a vector that only raises letter A's logit is flagged when A is always correct."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama()
    letters = letter_token_ids(tokenizer, 3)
    items = [MCItem(id=i.id, question=i.question, choices=i.choices, target=0) for i in make_items(30)]
    prompts = PromptBuilder(PromptFormat(), tokenizer)
    engine = FastEngine(model, prompts.encode_prompts(items), batch_size=8, letter_ids=letters)
    choices = [3] * len(items)
    unsteered = [
        int(s.argmax()) for s in scores_from_logits(engine.unsteered_logits(), engine.letter_positions, choices)
    ]
    # The final norm rescales the residual, so push along the unembedding of "A" at the last block hard.
    head = model.get_output_embeddings().weight
    direction = head[letters[0]].mean(0) - head[[t for ids in letters[1:] for t in ids]].mean(0)
    deltas = (50.0 * direction / direction.norm()).unsqueeze(0).detach()
    logits = engine.steered_logits(model.config.num_hidden_layers - 1, "residual", deltas)[0]
    steered = [int(s.argmax()) for s in scores_from_logits(logits, engine.letter_positions, choices)]
    assert sum(p == 0 for p in steered) > sum(p == 0 for p in unsteered)
    check = check_letter_bias(unsteered, steered, [0] * len(items))
    assert check.letter == "A"
    assert check.net_gain > 0
    assert check.flagged
    assert unsteered.count(0) < len(items), "the test needs some non-A predictions before steering"
    assert torch.isfinite(logits).all()
