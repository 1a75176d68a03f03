"""The run: compose data, model and prompts, call the configured method, write results and summary."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

import pas
from pas.config import auto_layers, call_target, validate_run_config
from pas.data.datamodule import PASDataModule
from pas.data.prompts import PromptBuilder, PromptFormat
from pas.distributed import is_global_zero
from pas.evaluation.scoring import letter_token_ids
from pas.io import atomic_write_json, atomic_write_text, prepare_output_dir
from pas.models.loading import LoadedModel
from pas.report.artifacts import comparison_table, summary_table
from pas.resume import RunState
from pas.stages import PASStage, RunContext, Timer
from pas.steering.sweep import check_grid
from pas.tracking import track_run, upload_run

log = logging.getLogger(__name__)


def make_logger(cfg: DictConfig) -> Any:
    if not cfg.get("logger"):
        return False
    return call_target(cfg.logger)


def make_datamodule(cfg: DictConfig) -> PASDataModule:
    """Build the task's DataModule from the run config, so every command splits a task the same way."""
    return PASDataModule(
        lambda: call_target(cfg.task.loader),
        task=cfg.task.name,
        seed=cfg.seed,
        max_sample_size=cfg.data.max_sample_size,
        fractions=tuple(cfg.data.split),
        batch_size=cfg.data.batch_size,
        shuffle_choices=cfg.data.shuffle_choices,
        train_size=cfg.data.get("train_size"),
        on_error=cfg.data.get("on_error", "raise"),
    )


def make_prompt_builder(cfg: DictConfig, loaded: LoadedModel) -> PromptBuilder:
    """Build the prompt renderer, truncating prompts to the model's context length."""
    context_length = getattr(loaded.model.config.get_text_config(), "max_position_embeddings", None)
    return PromptBuilder(PromptFormat(**cfg.prompt), loaded.tokenizer, context_length)


def build_context(cfg: DictConfig, timer: Timer, logger: Any, out_dir: Path | None = None) -> RunContext:
    """Load the task and the model, and check the grid against the model's depth."""
    out_dir = Path(cfg.output_dir) if out_dir is None else out_dir
    t = time.perf_counter()
    dm = make_datamodule(cfg)
    dm.setup()
    timer.phase("load_data", t)

    t = time.perf_counter()
    loaded: LoadedModel = call_target(cfg.model.load)
    timer.phase("load_model", t)
    layers = list(cfg.method.layers) if cfg.method.layers is not None else auto_layers(loaded.num_layers)
    strengths = [float(s) for s in cfg.method.strengths]
    check_grid(layers, strengths, loaded.num_layers)
    splits = dm.splits
    max_choices = max(item.n_choices for name in ("train", "val", "test") for item in splits[name])
    prompts = make_prompt_builder(cfg, loaded)
    letter_ids = letter_token_ids(loaded.tokenizer, max_choices)
    return RunContext(cfg, loaded, dm, prompts, letter_ids, layers, strengths, logger, out_dir, timer)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one task with the configured method and return the contents of ``results.json``.

    With ``logger=wandb`` the W&B run is finished when this returns or raises (see pas.tracking).
    """
    validate_run_config(cfg)
    # Checked before the logger exists, because loggers write into the same folder.
    run_dir = prepare_output_dir(cfg.output_dir)
    logger = make_logger(cfg)
    with track_run(logger, cfg), contextlib.ExitStack() as stack:
        out_dir = run_dir
        if not is_global_zero():
            # Every DDP process runs the pipeline; only global rank 0 writes into the run folder.
            out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pas-rank-")))
        results = _run(cfg, logger, run_dir, out_dir)
        upload_run(logger, out_dir, results)
    return results


def _run(cfg: DictConfig, logger: Any, run_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Run the method, writing artifacts to ``out_dir`` (``run_dir`` on rank 0, a scratch folder elsewhere)."""
    start = time.perf_counter()
    timer = Timer()
    atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    # Every DDP process keeps its state in the run folder, so all of them resume from the same point.
    # The processes hold identical state, so their atomic writes of the same files agree.
    state = RunState(run_dir, cfg, resume=bool(cfg.get("resume", False)))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ctx = build_context(cfg, timer, logger, out_dir)
    ctx.state = state

    outcome = call_target(cfg.method.run)(ctx)
    base: PASStage = outcome["base"]
    timer.seconds["total"] = round(time.perf_counter() - start, 3)
    splits = ctx.splits
    train_records = base.train_records
    results: dict[str, Any] = {
        "status": "ok",
        "method": cfg.method.name,
        "task": cfg.task.name,
        "task_group": cfg.task.get("group"),
        "target_behavior": cfg.task.get("target_behavior"),
        "model": ctx.loaded.name,
        "model_revision": ctx.loaded.revision,
        "seed": cfg.seed,
        "package_version": pas.__version__,
        "site": cfg.method.site,
        "sweep_engine": cfg.sweep.engine,
        "splits": splits.sizes(),
        "data": {"on_error": ctx.dm.on_error, "skipped_rows": ctx.dm.skipped_rows},
        "correct_letters": ctx.dm.letter_distribution(),
        "unsteered": {
            "train_acc": sum(r["pred"] == r["target"] for r in train_records) / max(len(train_records), 1),
            "val_acc": base.base_val.accuracy([item.target for item in splits.val]),
            "test_acc": base.base_test.accuracy([item.target for item in splits.test]),
        },
        "methods": base.records,
        "comparison": outcome["comparison"],
        "timings_s": timer.seconds,
    }
    for tag, stage in outcome.get("stages", {}).items():
        results.setdefault("stages", {})[tag] = {"methods": stage.records}
    for key in ("icl", "trained"):
        if key in outcome:
            results[key] = outcome[key]
    atomic_write_json(out_dir / "results.json", results)
    table = summary_table(base.records)
    report = f"{table}\n"
    flagged = [
        f"- {name}: {m['letter_bias']['reason']}" for name, m in base.records.items() if m["letter_bias"]["flagged"]
    ]
    if flagged:
        report += "\nLetter bias (the gain may be a letter preference, not the behavior):\n" + "\n".join(flagged) + "\n"
    if len(outcome["comparison"]) > len(base.records) + 1:
        report += "\nSide by side on the test split:\n\n" + comparison_table(outcome["comparison"]) + "\n"
    atomic_write_text(out_dir / "summary.md", report)
    if out_dir == run_dir:
        log.info(
            "Results for task %s on %s (seed %d), method %s:\n%s",
            cfg.task.name,
            ctx.loaded.name,
            cfg.seed,
            cfg.method.name,
            report,
        )
        log.info("Artifacts written to %s", out_dir)
    return results
