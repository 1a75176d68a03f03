"""LoRA fine-tuning through peft as a LightningModule, trained on the answer letter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from pas.data.prompts import PromptBuilder
from pas.data.schema import MCItem
from pas.evaluation.scoring import forward_letter_scores


def letter_loss_and_hits(
    model: nn.Module, prompts: PromptBuilder, batch: Sequence[MCItem], letter_ids: list[list[int]]
) -> tuple[torch.Tensor, int]:
    """Return the cross-entropy of the target letter among the item's letters, and the number of hits."""
    scores = forward_letter_scores(
        model, prompts.encode_prompts(list(batch)), letter_ids, [item.n_choices for item in batch]
    )
    targets = torch.tensor([item.target for item in batch], device=scores.device)
    loss = F.cross_entropy(scores, targets)
    hits = int((scores.argmax(-1) == targets).sum())
    return loss, hits


class LoRAFineTuneModule(L.LightningModule):
    """Trains a LoRA adapter with ``loss = -log p(target letter | prompt)`` over the item's letters.

    The letter probability is the softmax over the item's letters of the log-sum-exp of each
    letter's token variants, the same score that evaluation takes the argmax of. Checkpoints and
    ``state_dict`` hold the adapter weights only.
    """

    def __init__(
        self,
        lm: nn.Module,
        prompts: PromptBuilder,
        letter_ids: list[list[int]],
        rank: int = 8,
        alpha: int = 16,
        dropout: float = 0.05,
        target_modules: str | list[str] = "all-linear",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=list(target_modules) if not isinstance(target_modules, str) else target_modules,
            task_type="CAUSAL_LM",
        )
        # NOTE: get_peft_model injects LoRA layers into ``lm`` in place; the returned wrapper and
        # ``lm`` share every base weight, which stays frozen.
        self.model = get_peft_model(lm, config)
        self.prompts = prompts
        self.letter_ids = letter_ids
        self.lr = lr
        self.weight_decay = weight_decay

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch

    def on_train_epoch_start(self) -> None:
        # The LM arrives in eval mode; LoRA dropout needs train mode while fitting.
        self.model.train()

    def on_validation_epoch_start(self) -> None:
        self.model.eval()

    def training_step(self, batch: list[MCItem], batch_idx: int) -> torch.Tensor:
        loss, hits = letter_loss_and_hits(self.model, self.prompts, batch, self.letter_ids)
        self.log("sft/train_loss", loss, batch_size=len(batch), prog_bar=True)
        self.log("sft/train_acc", hits / len(batch), batch_size=len(batch), on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: list[MCItem], batch_idx: int) -> None:
        loss, hits = letter_loss_and_hits(self.model, self.prompts, batch, self.letter_ids)
        # Synchronized so that every DDP process keeps the same best epoch.
        self.log("sft/val_loss", loss, batch_size=len(batch), on_epoch=True, sync_dist=True)
        self.log("sft/val_acc", hits / len(batch), batch_size=len(batch), on_epoch=True, prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(self.model).items()}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load adapter weights saved by :meth:`on_save_checkpoint`."""
        set_peft_model_state_dict(self.model, state)
