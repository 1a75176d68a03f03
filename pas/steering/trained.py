"""A steering vector trained by gradient descent on the answer letter, with the LM frozen."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from pas.data.prompts import PromptBuilder
from pas.data.schema import MCItem
from pas.models.layers import Site
from pas.sft.module import letter_loss_and_hits
from pas.steering.hooks import add_at_site


class TrainedVectorModule(L.LightningModule):
    """Learns ``v`` at one layer and site: ``loss = CE(target letter | h + v) + l2 * ||v||^2``.

    ``v`` is the module's only parameter. The LM is held outside the module's children and has
    ``requires_grad`` turned off, so its weights get no gradients and are not in checkpoints.
    """

    def __init__(
        self,
        lm: nn.Module,
        prompts: PromptBuilder,
        letter_ids: list[list[int]],
        layer: int,
        site: Site,
        init: torch.Tensor,
        lr: float = 1e-2,
        l2: float = 0.0,
        layers_path: str | None = None,
    ) -> None:
        super().__init__()
        # The LM is frozen here too, so no gradient is ever computed for or stored on its weights.
        lm.requires_grad_(False)
        self._frozen = (lm,)
        self.vector = nn.Parameter(init.detach().clone().float())
        self.prompts = prompts
        self.letter_ids = letter_ids
        self.layer = layer
        self.site = site
        self.lr = lr
        self.l2 = l2
        self.layers_path = layers_path

    @property
    def lm(self) -> nn.Module:
        return self._frozen[0]

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch

    def _step(self, batch: list[MCItem]) -> tuple[torch.Tensor, int]:
        with add_at_site(self.lm, self.layer, self.site, self.vector, self.layers_path):
            return letter_loss_and_hits(self.lm, self.prompts, batch, self.letter_ids)

    def training_step(self, batch: list[MCItem], batch_idx: int) -> torch.Tensor:
        loss, hits = self._step(batch)
        penalty = self.l2 * self.vector.float().pow(2).sum()
        self.log("trained/train_loss", loss, batch_size=len(batch), prog_bar=True)
        self.log("trained/train_acc", hits / len(batch), batch_size=len(batch), on_step=False, on_epoch=True)
        return loss + penalty

    def validation_step(self, batch: list[MCItem], batch_idx: int) -> None:
        loss, hits = self._step(batch)
        self.log("trained/val_loss", loss, batch_size=len(batch), on_epoch=True)
        self.log("trained/val_acc", hits / len(batch), batch_size=len(batch), on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([self.vector], lr=self.lr)
