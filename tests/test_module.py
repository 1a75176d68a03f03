from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from pas.data.prompts import PromptBuilder, PromptFormat, render_answer, render_prompt
from pas.data.schema import MCItem
from pas.evaluation.scoring import letter_token_ids
from pas.steering.builders import EmptyContrastError
from pas.steering.module import PASFitModule
from tests.helpers import TINY_MODELS, make_items, tiny_tokenizer

LAYERS = [0, 2]


def _fit(model: torch.nn.Module, items: list[MCItem], batch_size: int = 4) -> PASFitModule:
    tokenizer = tiny_tokenizer()
    module = PASFitModule(
        model,
        PromptBuilder(PromptFormat(), tokenizer),
        LAYERS,
        "residual",
        ["pasf", "ipas_all", "ipas_wrong_only"],
        letter_token_ids(tokenizer, 4),
        batch_size,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(items, batch_size=batch_size, collate_fn=list))  # type: ignore[arg-type]
    return module


def _reference(model: torch.nn.Module, items: list[MCItem]) -> dict[str, torch.Tensor]:
    """Compute the three PAS vectors one text at a time from hidden_states[L + 1]."""
    tokenizer = tiny_tokenizer()
    fmt = PromptFormat()
    letters = letter_token_ids(tokenizer, 4)

    def encode(text: str) -> torch.Tensor:
        return torch.tensor([tokenizer(text)["input_ids"]])

    def act(text: str) -> torch.Tensor:
        with torch.no_grad():
            hidden = model(input_ids=encode(text), output_hidden_states=True).hidden_states
        return torch.stack([hidden[layer + 1][0, -1] for layer in LAYERS])

    right, wrong = [], []
    for item in items:
        with torch.no_grad():
            logits = model(input_ids=encode(render_prompt(item, fmt))).logits[0, -1]
        scores = [torch.logsumexp(logits[ids], 0) for ids in letters[: item.n_choices]]
        pred = int(torch.stack(scores).argmax())
        (right if pred == item.target else wrong).append((item, pred))

    def mean(texts: list[str]) -> torch.Tensor:
        return torch.stack([act(t) for t in texts]).double().mean(0)

    return {
        "pasf": mean([render_prompt(i, fmt) for i, _ in right]) - mean([render_prompt(i, fmt) for i, _ in wrong]),
        "ipas_all": mean([render_answer(i, i.target, fmt) for i, _ in right])
        - mean([render_answer(i, p, fmt) for i, p in wrong]),
        "ipas_wrong_only": mean([render_answer(i, i.target, fmt) for i, _ in wrong])
        - mean([render_answer(i, p, fmt) for i, p in wrong]),
    }


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_fitted_vectors_match_reference_loop(family: str) -> None:
    model = TINY_MODELS[family]()
    items = make_items(22, n_choices=3)
    module = _fit(model, items)
    reference = _reference(model, items)
    counts = module.counts()
    assert counts["pasf"]["positive"] + counts["pasf"]["negative"] == len(items)
    assert counts["pasf"]["positive"] > 0
    assert counts["pasf"]["negative"] > 0
    for variant, expected in reference.items():
        torch.testing.assert_close(module.vector_table()[variant].double(), expected, rtol=1e-4, atol=1e-5)


def test_lm_weights_untouched_and_not_in_checkpoint() -> None:
    model = TINY_MODELS["llama"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module = _fit(model, make_items(10))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(module.state_dict()) == {"vectors"}


def test_empty_negative_set_names_variant() -> None:
    model = TINY_MODELS["llama"]()
    tokenizer = tiny_tokenizer()
    letters = letter_token_ids(tokenizer, 3)
    fmt = PromptFormat()
    items = make_items(8)
    # Relabel every item with the model's own answer, so all train answers are right.
    relabeled = []
    for item in items:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tokenizer(render_prompt(item, fmt))["input_ids"]])).logits[0, -1]
        pred = int(torch.stack([torch.logsumexp(logits[ids], 0) for ids in letters]).argmax())
        relabeled.append(MCItem(id=item.id, question=item.question, choices=item.choices, target=pred))
    with pytest.raises(EmptyContrastError, match=r"pasf \(8 positive, 0 negative texts\)"):
        _fit(model, relabeled)
