"""The PAS LightningModule: fits mean-difference steering vectors on a frozen LM with ``Trainer.fit``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from pas.data.prompts import PromptBuilder
from pas.data.schema import MCItem
from pas.distributed import gather_objects, interleave
from pas.evaluation.scoring import scores_from_logits
from pas.models.layers import Site
from pas.steering.activations import forward_and_capture
from pas.steering.builders import VARIANTS, ContrastSet, EmptyContrastError, TextRef, build_contrast_sets


class PASFitModule(L.LightningModule):
    """Accumulates ``v = mean(h(pos)) - mean(h(neg))`` at every grid layer for each PAS variant.

    One epoch over the train split does everything: each batch is predicted without steering, the
    full-prompt activations of that same pass serve PASf, and the "question + answer" texts are
    encoded once for both introspective variants. Sums and counts are kept rather than means, so
    shards on several processes can be all-reduced into the same vector as one process computes.

    The frozen LM is held outside the module's children, so it is neither trained, moved, nor
    written to checkpoints; only the fitted vectors are.
    """

    def __init__(
        self,
        lm: nn.Module,
        prompts: PromptBuilder,
        layers: Sequence[int],
        site: Site,
        variants: Sequence[str],
        letter_ids: list[list[int]],
        batch_size: int,
        layers_path: str | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self._frozen = (lm,)
        self.prompts = prompts
        self.layers = list(layers)
        self.site = site
        self.variants = [v for v in VARIANTS if v in variants]
        self.letter_ids = letter_ids
        self.batch_size = batch_size
        self.layers_path = layers_path
        hidden = lm.config.get_text_config().hidden_size
        shape = (len(self.variants), len(self.layers), hidden)
        # Plain tensors, not buffers: DDP would overwrite buffers with rank 0's copy at every forward.
        self.pos_sum = torch.zeros(shape, dtype=torch.float64)
        self.neg_sum = torch.zeros(shape, dtype=torch.float64)
        self.pos_count = torch.zeros(len(self.variants), dtype=torch.float64)
        self.neg_count = torch.zeros(len(self.variants), dtype=torch.float64)
        self.register_buffer("vectors", torch.zeros(shape, dtype=torch.float32))
        self.train_records: list[dict[str, Any]] = []

    @property
    def lm(self) -> nn.Module:
        return self._frozen[0]

    def configure_optimizers(self) -> None:
        return None

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Batches are lists of MCItem text records; tensors are built on the LM's device later.
        return batch

    def _answer_activations(self, items: Sequence[MCItem], refs: set[TextRef]) -> dict[TextRef, torch.Tensor]:
        ordered = sorted(refs)
        if not ordered:
            return {}
        texts = [self.prompts.answer(items[r.item], r.choice) for r in ordered]  # type: ignore[arg-type]
        _, acts = forward_and_capture(
            self.lm,
            self.prompts.encode(texts),
            self.layers,
            self.site,
            self.batch_size,
            self.layers_path,
            with_logits=False,
        )
        return {ref: acts[k] for k, ref in enumerate(ordered)}

    def _accumulate(self, sets: dict[str, ContrastSet], acts: dict[TextRef, torch.Tensor]) -> None:
        for v, variant in enumerate(self.variants):
            for refs, total, count in (
                (sets[variant].positive, self.pos_sum, self.pos_count),
                (sets[variant].negative, self.neg_sum, self.neg_count),
            ):
                if refs:
                    total[v] += torch.stack([acts[r] for r in refs]).sum(0).double().cpu()
                    count[v] += len(refs)

    def training_step(self, batch: list[MCItem], batch_idx: int) -> None:
        logits, prompt_acts = forward_and_capture(
            self.lm, self.prompts.encode_prompts(batch), self.layers, self.site, self.batch_size, self.layers_path
        )
        assert logits is not None
        scores = scores_from_logits(logits, self.letter_ids, [item.n_choices for item in batch])
        preds = [int(row.argmax()) for row in scores]
        sets = build_contrast_sets(batch, preds, self.variants)
        acts: dict[TextRef, torch.Tensor] = {TextRef(i): prompt_acts[i] for i in range(len(batch))}
        answer_refs = {ref for s in sets.values() for ref in (*s.positive, *s.negative) if ref.choice is not None}
        acts.update(self._answer_activations(batch, answer_refs))
        self._accumulate(sets, acts)
        for item, pred, score in zip(batch, preds, scores):
            self.train_records.append({"id": item.id, "target": item.target, "pred": pred, "scores": score.tolist()})
        n_right = sum(p == item.target for p, item in zip(preds, batch))
        self.log(
            "train/unsteered_acc",
            n_right / len(batch),
            batch_size=len(batch),
            on_epoch=True,
            on_step=False,
            sync_dist=True,
        )

    def on_train_epoch_end(self) -> None:
        strategy = self.trainer.strategy
        if self.trainer.world_size > 1:
            for name in ("pos_sum", "neg_sum", "pos_count", "neg_count"):
                reduced = strategy.reduce(getattr(self, name).to(self.device), reduce_op="sum")
                setattr(self, name, reduced.cpu())
            # Each process predicted its own shard of the train split; put the records back in split order.
            self.train_records = interleave(gather_objects(self.train_records))
        problems = []
        for v, variant in enumerate(self.variants):
            n_pos, n_neg = int(self.pos_count[v]), int(self.neg_count[v])
            if n_pos == 0 or n_neg == 0:
                problems.append(f"{variant} ({n_pos} positive, {n_neg} negative texts)")
                continue
            mean_diff = self.pos_sum[v] / n_pos - self.neg_sum[v] / n_neg
            self.vectors[v] = mean_diff.float().to(self.vectors.device)
        if problems:
            correct = sum(r["pred"] == r["target"] for r in self.train_records)
            buildable = [v for i, v in enumerate(self.variants) if self.pos_count[i] > 0 and self.neg_count[i] > 0]
            fix = f"set method.variants={buildable} (these can be built), " if buildable else ""
            raise EmptyContrastError(
                f"cannot build {', '.join(problems)}: the unsteered model answered {correct} of "
                f"{len(self.train_records)} train items correctly, and a variant needs at least one "
                f"positive and one negative text. {fix}Raise data.max_sample_size, or pick another task"
            )

    def counts(self) -> dict[str, dict[str, int]]:
        """Return the positive and negative text counts per variant."""
        return {
            variant: {"positive": int(self.pos_count[v]), "negative": int(self.neg_count[v])}
            for v, variant in enumerate(self.variants)
        }

    def vector_table(self) -> dict[str, torch.Tensor]:
        """Return the fitted vectors per variant, each of shape ``(len(layers), H)``."""
        return {variant: self.vectors[v].detach().cpu() for v, variant in enumerate(self.variants)}
