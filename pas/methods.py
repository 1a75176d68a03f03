"""Methods a run can compare: PAS alone, and PAS beside and on top of SFT, ICL and a trained vector.

Each method config names one of these functions with ``_target_`` and ``_partial_: true``. The
function receives the run context and returns the parts of ``results.json`` it adds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from pas.config import ConfigError
from pas.evaluation.icl import ICLPromptBuilder, select_exemplars
from pas.evaluation.metrics import count_flips
from pas.evaluation.scoring import LetterPredictions
from pas.models.layers import check_layer
from pas.resume import EpochStateCallback
from pas.sft.module import LoRAFineTuneModule
from pas.stages import PASStage, RunContext, choices_of, run_pas, targets_of
from pas.steering.sweep import steered_predictions
from pas.steering.trained import TrainedVectorModule
from pas.steering.vector import SteeringVector

log = logging.getLogger(__name__)


def comparison_row(
    name: str,
    preds: LetterPredictions,
    ctx: RunContext,
    unsteered: LetterPredictions,
    baseline: LetterPredictions | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Describe one test-set result: accuracy, effect against unsteered (and baseline), flips against unsteered."""
    targets = targets_of(ctx.splits.test)
    acc = preds.accuracy(targets)
    flips = count_flips(unsteered.pred, preds.pred, targets)
    row = {"name": name, "test_acc": acc, "effect": acc - unsteered.accuracy(targets), **extra}
    row["effect_vs_baseline"] = acc - baseline.accuracy(targets) if baseline is not None else None
    row["flips"] = {"r2w": flips.r2w, "w2r": flips.w2r}
    return row


def pas_rows(
    stage: PASStage, ctx: RunContext, unsteered: LetterPredictions, baseline: LetterPredictions | None = None
) -> list[dict[str, Any]]:
    rows = []
    for variant, record in stage.records.items():
        rows.append(
            comparison_row(
                stage.label(variant),
                stage.steered_test[variant],
                ctx,
                unsteered,
                baseline,
                layer=record["layer"],
                strength=record["strength"],
                val_acc=record["val_acc"],
            )
        )
    return rows


def base_rows(stage: PASStage, ctx: RunContext) -> list[dict[str, Any]]:
    unsteered_val = stage.base_val.accuracy(targets_of(ctx.splits.val))
    first = comparison_row("unsteered", stage.base_test, ctx, stage.base_test, val_acc=unsteered_val)
    return [first, *pas_rows(stage, ctx, stage.base_test)]


def base_and_combined_rows(base: PASStage, combined: PASStage, ctx: RunContext, baseline: str) -> list[dict[str, Any]]:
    """Return the rows of unsteered and PAS, then the baseline alone, then PAS on top of the baseline.

    The baseline row is the combined stage's unsteered result; the combined rows compare against
    both the unsteered base model and that baseline.
    """
    rows = base_rows(base, ctx)
    baseline_val = combined.base_val.accuracy(targets_of(ctx.splits.val))
    rows.append(comparison_row(baseline, combined.base_test, ctx, base.base_test, val_acc=baseline_val))
    rows += pas_rows(combined, ctx, base.base_test, combined.base_test)
    return rows


def run_pas_only(ctx: RunContext) -> dict[str, Any]:
    """PAS on the base model with plain prompts."""
    stage = run_pas(ctx, ctx.loaded.model, ctx.prompts, "pas")
    return {"base": stage, "comparison": base_rows(stage, ctx)}


def fit_best_checkpoint(ctx: RunContext, module: Any, name: str, monitor: str, epochs: int) -> dict[str, torch.Tensor]:
    """Train ``module`` on the train split for ``epochs`` and return the state of the best validation epoch.

    The train order is a permutation drawn from the seed and the epoch number. After each epoch
    the weights, optimizer and random state are saved under ``state/epochs/<name>/`` in
    safetensors (no Lightning checkpoint, which is a pickle), so a resumed run continues after the
    last finished epoch and trains exactly as an uninterrupted run.
    """
    state_dir = ctx.state.epochs_dir(name) if ctx.state is not None else ctx.out_dir / "state" / "epochs" / name
    saver = EpochStateCallback(state_dir, monitor, resume=ctx.state is not None and ctx.state.resume)
    remaining = epochs - saver.start_epoch
    if remaining > 0:
        saver.restore_weights(module)
        trainer = ctx.trainer(
            max_epochs=remaining,
            limit_val_batches=1.0,
            enable_checkpointing=False,
            callbacks=[saver],
            num_sanity_val_steps=0,
        )
        ctx.dm.shuffle_train = True
        ctx.dm.epoch_offset = saver.start_epoch
        try:
            trainer.fit(module, train_dataloaders=ctx.dm.train_dataloader(), val_dataloaders=ctx.dm.val_dataloader())
        finally:
            ctx.dm.shuffle_train = False
            ctx.dm.epoch_offset = 0
    weights, score, best_epoch = saver.best_weights()
    log.info("%s: best %s %.3f in epoch %d", name, monitor, score, best_epoch)
    return weights


def run_sft_pas(
    ctx: RunContext,
    rank: int,
    alpha: int,
    dropout: float,
    target_modules: Any,
    lr: float,
    weight_decay: float,
    epochs: int,
    save_adapter: bool = True,
) -> dict[str, Any]:
    """PAS on the base model, LoRA fine-tuning, then PAS on the fine-tuned model (SFT+PAS)."""
    base = run_pas(ctx, ctx.loaded.model, ctx.prompts, "pas")

    t = time.perf_counter()
    # LoRA initialization and dropout draw from torch's generator. Reseeding here makes them
    # independent of the PAS stage, which a resumed run may have skipped.
    torch.manual_seed(ctx.cfg.seed)
    module = LoRAFineTuneModule(
        ctx.loaded.model, ctx.prompts, ctx.letter_ids, rank, alpha, dropout, target_modules, lr, weight_decay
    )
    module.load_adapter_state(fit_best_checkpoint(ctx, module, "sft", "sft/val_acc", epochs))
    module.model.eval()
    if save_adapter:
        module.model.save_pretrained(ctx.out_dir / "adapter")
    ctx.timer.phase("sft_fit", t)

    combined = run_pas(ctx, module.model, ctx.prompts, "sft+pas")

    rows = base_and_combined_rows(base, combined, ctx, "sft")
    return {"base": base, "stages": {"sft+pas": combined}, "comparison": rows}


def run_icl_pas(ctx: RunContext, k: int, max_tokens: int | None = None) -> dict[str, Any]:
    """PAS with plain prompts, ICL alone, and PAS fitted on ICL predictions (ICL+PAS)."""
    base = run_pas(ctx, ctx.loaded.model, ctx.prompts, "pas")
    train = ctx.splits.train
    by_id = {record["id"]: record["pred"] for record in base.train_records}
    exemplars = select_exemplars(train, [by_id[item.id] for item in train], k, ctx.cfg.seed)
    budget = max_tokens or int(ctx.loaded.model.config.get_text_config().max_position_embeddings)
    prompts = ICLPromptBuilder(ctx.prompts.fmt, ctx.prompts.tokenizer, exemplars, budget)
    log.info("ICL with %d exemplars (%s), budget %d tokens", len(exemplars), [e.id for e in exemplars], budget)
    combined = run_pas(ctx, ctx.loaded.model, prompts, "icl+pas")
    rows = base_and_combined_rows(base, combined, ctx, "icl")
    extra = {"exemplars": [e.id for e in exemplars], "mean_exemplars_per_prompt": prompts.mean_exemplars()}
    return {"base": base, "stages": {"icl+pas": combined}, "comparison": rows, "icl": extra}


def run_pas_trained(
    ctx: RunContext, init: str, lr: float, l2: float, epochs: int, layer: int | None = None
) -> dict[str, Any]:
    """PAS variants, then a vector trained by gradient descent at the best variant's layer (or ``layer``)."""
    if init not in ("pas", "zero"):
        raise ConfigError(f"method.run.init must be 'pas' or 'zero', got {init!r}")
    if layer is not None:
        check_layer(layer, ctx.loaded.num_layers)
        if init == "pas" and layer not in ctx.layers:
            raise ConfigError(
                f"method.run.init=pas needs a PAS vector at layer {layer}, which is not in method.layers "
                f"{ctx.layers}; add it to method.layers or set method.run.init=zero"
            )
    base = run_pas(ctx, ctx.loaded.model, ctx.prompts, "pas")
    best_variant = max(base.records, key=lambda v: (base.records[v]["val_acc"], -abs(base.records[v]["strength"])))
    best = base.records[best_variant]
    chosen_layer = best["layer"] if layer is None else layer
    if init == "pas":
        # The best variant's vector at that layer, scaled by its selected strength when the layer is
        # the selected one (at another layer the strength was not selected, so it starts at 1).
        scale = best["strength"] if chosen_layer == best["layer"] else 1.0
        start = base.vectors[best_variant][ctx.layers.index(chosen_layer)] * scale
    else:
        start = torch.zeros(ctx.loaded.hidden_size)

    t = time.perf_counter()
    site = ctx.cfg.method.site
    module = TrainedVectorModule(
        ctx.loaded.model, ctx.prompts, ctx.letter_ids, chosen_layer, site, start, lr, l2, ctx.layers_path
    )
    state = fit_best_checkpoint(ctx, module, "trained_vector", "trained/val_acc", epochs)
    vector = state["vector"].float()
    ctx.timer.phase("trained_fit", t)

    test_engine = ctx.engine(ctx.loaded.model, ctx.prompts, ctx.splits.test)
    steered = steered_predictions(test_engine, vector, chosen_layer, site, 1.0, choices_of(ctx.splits.test))
    val_engine = ctx.engine(ctx.loaded.model, ctx.prompts, ctx.splits.val)
    val_preds = steered_predictions(val_engine, vector, chosen_layer, site, 1.0, choices_of(ctx.splits.val))
    saved = SteeringVector(
        vector=vector,
        layer=chosen_layer,
        site=site,
        strength=1.0,
        method="pas_trained",
        metadata={
            "model_name": ctx.loaded.name,
            "model_revision": ctx.loaded.revision,
            "task": ctx.cfg.task.name,
            "seed": ctx.cfg.seed,
            "init": init,
            "init_variant": best_variant if init == "pas" else None,
        },
    ).save(ctx.out_dir / "vectors" / "pas_trained")
    rows = base_rows(base, ctx)
    rows.append(
        comparison_row(
            "pas_trained",
            steered,
            ctx,
            base.base_test,
            layer=chosen_layer,
            strength=1.0,
            val_acc=val_preds.accuracy(targets_of(ctx.splits.val)),
        )
    )
    extra = {
        "layer": chosen_layer,
        "init": init,
        "init_variant": best_variant if init == "pas" else None,
        "vector_norm": float(vector.norm()),
        "vector_file": str(saved.relative_to(ctx.out_dir)),
    }
    return {"base": base, "comparison": rows, "trained": extra}
