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
from pas.steering.estimators import (
    CONTRAST_ESTIMATORS,
    ESTIMATORS,
    ActivationCollector,
    EstimatorSettings,
    fit_contrast_estimators,
    load_caa_pairs,
    render_caa_pair,
)


class PASFitModule(L.LightningModule):
    """Accumulates ``v = mean(h(pos)) - mean(h(neg))`` at every grid layer for each PAS variant.

    One epoch over the train split does everything: each batch is predicted without steering, the
    full-prompt activations of that same pass serve PASf, and the "question + answer" texts are
    encoded once for both introspective variants. Sums and counts are kept rather than means, so
    shards on several processes can be all-reduced into the same vector as one process computes.

    The frozen LM is held outside the module's children, so it is neither trained, moved, nor
    written to checkpoints; only the fitted vectors are.

    ``variants`` may also name the estimators of ``pas.steering.estimators`` (``pca``, ``probe``,
    ``caa``), configured by ``estimators``. PCA and the probe read per-text activations of one
    contrast set, kept in an ``ActivationCollector`` that is all-gathered under DDP.
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
        estimators: EstimatorSettings | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self._frozen = (lm,)
        self.prompts = prompts
        self.layers = list(layers)
        self.site = site
        self.variants = [v for v in VARIANTS if v in variants]
        self.estimators = [e for e in ESTIMATORS if e in variants]
        self.settings = estimators or EstimatorSettings()
        needs_contrast = any(e in CONTRAST_ESTIMATORS for e in self.estimators)
        self.collector = ActivationCollector(self.settings.contrast) if needs_contrast else None
        self.estimated: dict[str, torch.Tensor] = {}
        self.caa_count = 0
        self.contrast_counts = {"positive": 0, "negative": 0}
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

    def _rows(self, refs: Sequence[TextRef], acts: dict[TextRef, torch.Tensor]) -> torch.Tensor:
        if not refs:
            return torch.zeros(0, len(self.layers), self.vectors.shape[-1])
        return torch.stack([acts[r] for r in refs])  # (texts, L, H)

    def _fit_estimators(self) -> list[str]:
        """Fit the estimator variants and return the problems (empty contrast sets) to report."""
        problems = []
        if self.collector is not None:
            names = [e for e in self.estimators if e in CONTRAST_ESTIMATORS]
            positive, negative = self.collector.gather(self, len(self.layers), self.vectors.shape[-1])
            if len(positive) == 0 or len(negative) == 0:
                problems.append(
                    f"{'/'.join(names)} on the {self.collector.contrast} contrast set "
                    f"({len(positive)} positive, {len(negative)} negative texts)"
                )
            else:
                self.estimated.update(
                    fit_contrast_estimators(names, positive, negative, self.collector.paired, self.settings)
                )
                self.contrast_counts = {"positive": len(positive), "negative": len(negative)}
        if "caa" in self.estimators:
            self.estimated["caa"] = self._fit_caa()
        return problems

    def _fit_caa(self) -> torch.Tensor:
        """Return ``mean(h(pos_i) - h(neg_i))`` over the CAA pairs file at every layer, ``(L, H)``."""
        if not self.settings.caa_pairs:
            raise EmptyContrastError("caa needs a pairs file: set method.estimators.caa_pairs=PATH.jsonl")
        pairs = load_caa_pairs(self.settings.caa_pairs)
        texts = [render_caa_pair(pair, self.prompts.fmt, self.prompts.tokenizer) for pair in pairs]
        # NOTE: every process encodes the whole file, so under DDP each one computes the same vector.
        _, pos = forward_and_capture(
            self.lm,
            self.prompts.encode([p for p, _ in texts]),
            self.layers,
            self.site,
            self.batch_size,
            self.layers_path,
            with_logits=False,
        )
        _, neg = forward_and_capture(
            self.lm,
            self.prompts.encode([n for _, n in texts]),
            self.layers,
            self.site,
            self.batch_size,
            self.layers_path,
            with_logits=False,
        )
        self.caa_count = len(pairs)
        return (pos.double() - neg.double()).mean(0).float().cpu()

    def training_step(self, batch: list[MCItem], batch_idx: int) -> None:
        logits, prompt_acts = forward_and_capture(
            self.lm, self.prompts.encode_prompts(batch), self.layers, self.site, self.batch_size, self.layers_path
        )
        assert logits is not None
        scores = scores_from_logits(logits, self.letter_ids, [item.n_choices for item in batch])
        preds = [int(row.argmax()) for row in scores]
        contrast = [self.collector.contrast] if self.collector and self.collector.contrast not in self.variants else []
        sets = build_contrast_sets(batch, preds, self.variants + contrast)
        acts: dict[TextRef, torch.Tensor] = {TextRef(i): prompt_acts[i] for i in range(len(batch))}
        answer_refs = {ref for s in sets.values() for ref in (*s.positive, *s.negative) if ref.choice is not None}
        acts.update(self._answer_activations(batch, answer_refs))
        self._accumulate(sets, acts)
        if self.collector is not None:
            chosen = sets[self.collector.contrast]
            paired = [r.item for r in chosen.positive] == [r.item for r in chosen.negative]
            self.collector.add(self._rows(chosen.positive, acts), self._rows(chosen.negative, acts), paired)
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
        problems += self._fit_estimators()
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
        counts = {
            variant: {"positive": int(self.pos_count[v]), "negative": int(self.neg_count[v])}
            for v, variant in enumerate(self.variants)
        }
        for name in self.estimators:
            if name == "caa":
                counts[name] = {"positive": self.caa_count, "negative": self.caa_count}
            else:
                counts[name] = dict(self.contrast_counts)
        return counts

    def vector_table(self) -> dict[str, torch.Tensor]:
        """Return the fitted vectors per variant, each of shape ``(len(layers), H)``."""
        table = {variant: self.vectors[v].detach().cpu() for v, variant in enumerate(self.variants)}
        table.update({name: self.estimated[name] for name in self.estimators})
        return table
