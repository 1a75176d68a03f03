from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from peft import PeftModel
from torch.utils.data import DataLoader

from pas.data.prompts import PromptBuilder, PromptFormat
from pas.data.schema import MCItem
from pas.evaluation.scoring import letter_token_ids
from pas.models.layers import find_decoder_layers, find_site_module
from pas.sft.module import LoRAFineTuneModule, letter_loss_and_hits
from pas.steering.hooks import add_at_site
from pas.steering.trained import TrainedVectorModule
from tests.helpers import TINY_MODELS, tiny_tokenizer


def _learnable_items(n: int) -> list[MCItem]:
    """Items whose answer is always the choice "yes", at varying letters: learnable from the text."""
    items = []
    for i in range(n):
        target = i % 3
        choices = ["no", "maybe", "never"]
        choices.insert(target, "yes")
        items.append(MCItem(id=f"s{i}", question=f"Is {i} fine?", choices=tuple(choices[:3]), target=target))
    return items


def _trainer(epochs: int, precision: str = "32-true") -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        precision=precision,
    )


def _mean_loss(model: torch.nn.Module, prompts: PromptBuilder, items: list[MCItem], letters: list[list[int]]) -> float:
    with torch.no_grad():
        return float(letter_loss_and_hits(model, prompts, items, letters)[0])


def test_lora_loss_decreases_and_only_adapter_changes() -> None:
    model = TINY_MODELS["llama"]()
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    prompts = PromptBuilder(PromptFormat(), tiny_tokenizer())
    letters = letter_token_ids(tiny_tokenizer(), 3)
    items = _learnable_items(24)
    module = LoRAFineTuneModule(model, prompts, letters, rank=4, alpha=8, dropout=0.0, lr=5e-3)
    before = _mean_loss(module.model, prompts, items, letters)
    _trainer(6).fit(module, DataLoader(items, batch_size=8, collate_fn=list))  # type: ignore[arg-type]
    after = _mean_loss(module.model, prompts, items, letters)
    assert after < before - 0.05
    changed = {
        name
        for name, value in module.model.named_parameters()
        if name.replace("base_model.model.", "") in base_weights
        and not torch.equal(value, base_weights[name.replace("base_model.model.", "")])
    }
    assert changed == set()
    trainable = [name for name, p in module.model.named_parameters() if p.requires_grad]
    assert trainable
    assert all("lora_" in name for name in trainable)


def test_adapter_round_trip(tmp_path: Path) -> None:
    prompts = PromptBuilder(PromptFormat(), tiny_tokenizer())
    letters = letter_token_ids(tiny_tokenizer(), 3)
    module = LoRAFineTuneModule(TINY_MODELS["llama"](), prompts, letters, rank=4, lr=5e-3)
    _trainer(2).fit(module, DataLoader(_learnable_items(12), batch_size=6, collate_fn=list))  # type: ignore[arg-type]
    module.model.eval()
    module.model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(TINY_MODELS["llama"](), tmp_path / "adapter")
    ids = torch.randint(3, 300, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, module.model(input_ids=ids).logits)
    saved = {k: v for k, v in module.model.state_dict().items() if "lora_" in k}
    for name, value in reloaded.state_dict().items():
        if "lora_" in name:
            assert torch.equal(value, saved[name]), name


def test_hooks_reach_wrapped_modules() -> None:
    prompts = PromptBuilder(PromptFormat(), tiny_tokenizer())
    letters = letter_token_ids(tiny_tokenizer(), 3)
    module = LoRAFineTuneModule(TINY_MODELS["gpt2"](), prompts, letters, rank=2)
    wrapped = module.model
    layers = find_decoder_layers(wrapped)
    assert type(layers[0]).__name__ == "GPT2Block"
    assert "lora" in type(find_site_module(wrapped, 1, "attn").c_attn).__module__
    ids = torch.randint(3, 300, (1, 5))
    with torch.no_grad():
        base = wrapped(input_ids=ids, output_hidden_states=True).hidden_states[2]
        with add_at_site(wrapped, 1, "residual", torch.ones(32)):
            steered = wrapped(input_ids=ids, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(steered[0, -1], base[0, -1] + 1, rtol=0, atol=1e-6)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_trained_vector_only_parameter(precision: str) -> None:
    model = TINY_MODELS["llama"]()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    prompts = PromptBuilder(PromptFormat(), tiny_tokenizer())
    letters = letter_token_ids(tiny_tokenizer(), 3)
    items = _learnable_items(18)
    module = TrainedVectorModule(
        model, prompts, letters, layer=2, site="residual", init=torch.zeros(32), lr=0.05, l2=1e-3
    )
    assert [name for name, _ in module.named_parameters()] == ["vector"]
    before = _mean_loss(model, prompts, items, letters)
    _trainer(5, precision).fit(module, DataLoader(items, batch_size=6, collate_fn=list))  # type: ignore[arg-type]
    assert module.vector.abs().sum() > 0
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with add_at_site(model, 2, "residual", module.vector.detach()):
        after = _mean_loss(model, prompts, items, letters)
    assert after < before
    assert set(module.state_dict()) == {"vector"}


def test_lora_runs_in_bf16_mixed() -> None:
    prompts = PromptBuilder(PromptFormat(), tiny_tokenizer())
    letters = letter_token_ids(tiny_tokenizer(), 3)
    module = LoRAFineTuneModule(TINY_MODELS["llama"](), prompts, letters, rank=2, lr=1e-2)
    lora_before = {k: v.clone() for k, v in module.model.state_dict().items() if "lora_B" in k}
    _trainer(1, "bf16-mixed").fit(module, DataLoader(_learnable_items(8), batch_size=4, collate_fn=list))  # type: ignore[arg-type]
    lora_after = {k: v for k, v in module.model.state_dict().items() if "lora_B" in k}
    assert any(not torch.equal(lora_before[k], lora_after[k]) for k in lora_before)
    assert all(torch.isfinite(v).all() for v in lora_after.values())
