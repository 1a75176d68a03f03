"""Run context and the PAS stage (fit, sweep, test) shared by every method."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from pas.config import call_target
from pas.data.datamodule import PASDataModule
from pas.data.prompts import PromptBuilder
from pas.data.schema import MCItem
from pas.data.splits import Splits
from pas.distributed import GatheredEngine, rank_and_world
from pas.evaluation.letter_bias import check_letter_bias, letter_counts
from pas.evaluation.metrics import count_flips
from pas.evaluation.scoring import LetterPredictions
from pas.models.loading import LoadedModel
from pas.report.artifacts import write_heatmap, write_predictions_csv
from pas.resume import FitState, RunState
from pas.steering.engines import Engine, make_engine
from pas.steering.estimators import estimator_settings
from pas.steering.module import PASFitModule
from pas.steering.sweep import SweepResult, predictions_from_logits, run_sweep, steered_predictions
from pas.steering.vector import SteeringVector

log = logging.getLogger(__name__)

# Lightning warns about these on purpose-built modules: fitting PAS vectors needs no optimizer,
# and batches of MCItem records are moved to the device by the modules themselves.
warnings.filterwarnings("ignore", message=r".*configure_optimizers.*returned `None`.*")
warnings.filterwarnings("ignore", message=r".*overridden `transfer_batch_to_device`.*")


@dataclass
class Timer:
    """Wall-clock seconds per named phase."""

    seconds: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str, start: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


@dataclass
class RunContext:
    """Everything a method needs: config, data, model, letters, grid, logger and output folder."""

    cfg: DictConfig
    loaded: LoadedModel
    dm: PASDataModule
    prompts: PromptBuilder
    letter_ids: list[list[int]]
    layers: list[int]
    strengths: list[float]
    logger: Any
    out_dir: Path
    timer: Timer
    state: RunState | None = None

    @property
    def splits(self) -> Splits:
        return self.dm.splits

    @property
    def layers_path(self) -> str | None:
        return self.cfg.model.get("layers_path")

    def engine(self, model: nn.Module, prompts: PromptBuilder, items: list[MCItem]) -> Engine:
        sweep = self.cfg.sweep

        def make(indices: list[int]) -> Engine:
            return make_engine(
                sweep.engine,
                model,
                prompts.encode_prompts([items[i] for i in indices]),
                sweep.batch_size,
                self.letter_ids,
                self.layers_path,
                sweep.configs_per_pass,
            )

        if rank_and_world()[1] > 1:
            return GatheredEngine(make, len(items))  # type: ignore[return-value]
        return make(list(range(len(items))))

    def trainer(self, **overrides: Any) -> Any:
        """Instantiate the configured Lightning Trainer with per-stage overrides."""
        return call_target(self.cfg.trainer, logger=self.logger, **overrides)


def targets_of(items: list[MCItem]) -> list[int]:
    return [item.target for item in items]


def choices_of(items: list[MCItem]) -> list[int]:
    return [item.n_choices for item in items]


@dataclass
class PASStage:
    """The outcome of fitting, selecting and testing the PAS variants on one model and prompt style."""

    tag: str
    vectors: dict[str, torch.Tensor]
    sweeps: dict[str, SweepResult]
    base_val: LetterPredictions
    base_test: LetterPredictions
    steered_test: dict[str, LetterPredictions]
    records: dict[str, dict[str, Any]]
    train_records: list[dict[str, Any]]

    def label(self, variant: str) -> str:
        return f"{self.tag}/{variant}"


def fit_vectors(ctx: RunContext, model: nn.Module, prompts: PromptBuilder) -> PASFitModule:
    """Fit every variant's vectors at every grid layer in one epoch of ``Trainer.fit``."""
    cfg = ctx.cfg
    module = PASFitModule(
        model,
        prompts,
        ctx.layers,
        cfg.method.site,
        list(cfg.method.variants),
        ctx.letter_ids,
        cfg.data.batch_size,
        ctx.layers_path,
        estimator_settings(cfg.method.get("estimators")),
    )
    # Lightning's distributed sampler pads shards with repeated items, which the sums would count twice.
    trainer = ctx.trainer(max_epochs=1, limit_val_batches=0, enable_checkpointing=False, use_distributed_sampler=False)
    trainer.fit(module, train_dataloaders=ctx.dm.fit_dataloader())
    return module


def _record(
    sweep: SweepResult,
    test_items: list[MCItem],
    unsteered_val: float,
    base_test: LetterPredictions,
    steered: LetterPredictions,
    counts: dict[str, int],
) -> dict[str, Any]:
    targets = targets_of(test_items)
    flips = count_flips(base_test.pred, steered.pred, targets)
    test_acc = steered.accuracy(targets)
    unsteered_test = base_test.accuracy(targets)
    return {
        "layer": sweep.best_layer,
        "strength": sweep.best_strength,
        "val_acc": sweep.best_val_acc,
        "unsteered_val_acc": unsteered_val,
        "test_acc": test_acc,
        "unsteered_test_acc": unsteered_test,
        "effect": test_acc - unsteered_test,
        "flips": {"r2w": flips.r2w, "w2r": flips.w2r},
        "predicted_letters": {"unsteered": letter_counts(base_test.pred), "steered": letter_counts(steered.pred)},
        "letter_bias": check_letter_bias(base_test.pred, steered.pred, targets).to_dict(),
        "train_counts": counts,
        "grid": {
            "layers": sweep.layers,
            "strengths": sweep.strengths,
            "val_acc": [[round(float(a), 6) for a in row] for row in sweep.val_acc],
        },
    }


def artifact_name(tag: str, variant: str) -> str:
    """Name a stage's files: the plain PAS stage keeps the bare variant name."""
    return variant if tag == "pas" else f"{tag.replace('+', '_')}-{variant}"


def fit_or_resume(ctx: RunContext, model: nn.Module, prompts: PromptBuilder, tag: str) -> FitState:
    """Fit the vectors of stage ``tag``, or read them from the run's saved state when resuming."""
    saved = ctx.state.load_fit(tag) if ctx.state is not None else None
    if saved is not None:
        return saved
    module = fit_vectors(ctx, model, prompts)
    fit = FitState(module.vector_table(), module.counts(), module.train_records)
    if ctx.state is not None:
        ctx.state.save_fit(tag, fit)
    return fit


def run_pas(ctx: RunContext, model: nn.Module, prompts: PromptBuilder, tag: str = "pas") -> PASStage:
    """Fit the PAS variants, pick layer and strength on validation, test them and write their artifacts."""
    cfg, splits = ctx.cfg, ctx.splits
    t = time.perf_counter()
    fit = fit_or_resume(ctx, model, prompts, tag)
    vectors = fit.vectors
    ctx.timer.phase(f"{tag}_fit", t)

    t = time.perf_counter()
    val_engine = ctx.engine(model, prompts, splits.val)
    base_val = predictions_from_logits(val_engine.unsteered_logits(), val_engine, choices_of(splits.val))
    unsteered_val = base_val.accuracy(targets_of(splits.val))

    def log_config(variant: str, layer: int, strength: float, acc: float) -> None:
        if ctx.logger:
            ctx.logger.log_metrics(
                {f"sweep/{tag}/{variant}/val_acc": acc, "sweep/layer": layer, "sweep/strength": strength}
            )

    done = ctx.state.load_sweep(tag) if ctx.state is not None else {}

    def save_progress(finished: dict[str, float]) -> None:
        if ctx.state is not None:
            ctx.state.save_sweep(tag, finished)

    sweeps = run_sweep(
        val_engine,
        vectors,
        ctx.layers,
        ctx.strengths,
        cfg.method.site,
        targets_of(splits.val),
        choices_of(splits.val),
        log_config,
        chunk_size=cfg.sweep.configs_per_pass,
        done=done,
        on_chunk=save_progress,
    )
    del val_engine
    ctx.timer.phase(f"{tag}_sweep", t)

    t = time.perf_counter()
    test_engine = ctx.engine(model, prompts, splits.test)
    base_test = predictions_from_logits(test_engine.unsteered_logits(), test_engine, choices_of(splits.test))
    steered_test, records = {}, {}
    counts = fit.counts
    for variant, sweep in sweeps.items():
        row = ctx.layers.index(sweep.best_layer)
        steered = steered_predictions(
            test_engine,
            vectors[variant][row],
            sweep.best_layer,
            cfg.method.site,
            sweep.best_strength,
            choices_of(splits.test),
        )
        steered_test[variant] = steered
        record = _record(sweep, splits.test, unsteered_val, base_test, steered, counts[variant])
        name = artifact_name(tag, variant)
        write_predictions_csv(ctx.out_dir / "predictions" / f"{name}.csv", splits.test, base_test.pred, steered.pred)
        write_heatmap(ctx.out_dir / "heatmaps" / f"{name}.png", sweep, unsteered_val, f"{cfg.task.name} {name}")
        vector = SteeringVector(
            vector=vectors[variant][row],
            layer=sweep.best_layer,
            site=cfg.method.site,
            strength=sweep.best_strength,
            method=variant if tag == "pas" else f"{tag}/{variant}",
            metadata={
                "model_name": ctx.loaded.name,
                "model_revision": ctx.loaded.revision,
                "task": cfg.task.name,
                "seed": cfg.seed,
                "train_counts": counts[variant],
            },
        )
        record["vector_file"] = str(vector.save(ctx.out_dir / "vectors" / name).relative_to(ctx.out_dir))
        if record["letter_bias"]["flagged"]:
            log.warning("Letter bias in %s: %s", name, record["letter_bias"]["reason"])
        records[variant] = record
    ctx.timer.phase(f"{tag}_test", t)
    return PASStage(tag, vectors, sweeps, base_val, base_test, steered_test, records, fit.train_records)
