"""Weights & Biases tracking: the resolved config at the start, the run's artifacts at the end.

Metrics reach W&B through Lightning's ``WandbLogger``, which the pipeline passes to every Trainer
and to the sweep, so W&B receives the same metrics as the CSV logger. This module adds what a
Trainer does not log: the resolved config, the validation heatmaps as images, the comparison rows
as a ``wandb.Table``, the vectors as an artifact, and the closing of the W&B run, also when the
run fails. Another logger is only saved at the end of the run (see ``track_run``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

COMPARISON_COLUMNS = ("name", "layer", "strength", "val_acc", "test_acc", "effect", "effect_vs_baseline", "r2w", "w2r")
# Exit code recorded for a W&B run whose PAS run raised, so W&B shows it as failed.
FAILED_EXIT_CODE = 1


def is_wandb(logger: Any) -> bool:
    return isinstance(logger, WandbLogger)


@contextmanager
def track_run(logger: Any, cfg: DictConfig) -> Iterator[None]:
    """Log the resolved config to W&B, run the block, then flush the logger and finish the W&B run.

    The W&B run is finished with exit code 0 when the block completes and with exit code 1 when it
    raises (the exception is re-raised), so a failed job never leaves a W&B run open. Any Lightning
    logger is saved at the end, because CSVLogger keeps the metrics logged outside a Trainer (the
    sweep's) in memory until ``save()``.
    """
    if is_wandb(logger):
        # Starting the W&B run here, before the model loads, means any later failure is recorded.
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        yield
    except BaseException:
        _close(logger, FAILED_EXIT_CODE)
        raise
    _close(logger, 0)


def _close(logger: Any, exit_code: int) -> None:
    if not logger:
        return
    try:
        logger.save()
    except Exception as err:
        if exit_code == 0:
            raise
        # The run has already failed; its own error is the one to report.
        log.warning("Could not save the logger after the failure: %s", err)
    if is_wandb(logger):
        _finish(logger, exit_code)


@rank_zero_only
def _finish(logger: WandbLogger, exit_code: int) -> None:
    run = logger.experiment
    log.info("Finishing W&B run %s with exit code %d", run.id, exit_code)
    run.finish(exit_code=exit_code)


def comparison_table(rows: list[dict[str, Any]]) -> Any:
    """Build a ``wandb.Table`` with one row per compared result (unsteered, baselines, PAS variants)."""
    import wandb

    data = [
        [
            row["name"],
            row.get("layer"),
            row.get("strength"),
            row.get("val_acc"),
            row["test_acc"],
            row["effect"],
            row.get("effect_vs_baseline"),
            row["flips"]["r2w"],
            row["flips"]["w2r"],
        ]
        for row in rows
    ]
    return wandb.Table(columns=list(COMPARISON_COLUMNS), data=data)


def artifact_name(results: dict[str, Any]) -> str:
    """Name the vectors artifact after task, method, model and seed, in the characters W&B allows."""
    model = str(results["model"]).rstrip("/").split("/")[-1]
    name = f"vectors-{results['task']}-{results['method']}-{model}-seed{results['seed']}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@rank_zero_only
def upload_run(logger: Any, out_dir: Path, results: dict[str, Any]) -> None:
    """Upload the heatmaps, the comparison table, the test summary and the vectors of a finished run.

    Heatmaps are logged as ``heatmaps/<name>`` images, the comparison rows as the table
    ``results/comparison`` and each row's test accuracy and effect as summary values
    ``test/<name>/acc`` and ``test/<name>/effect``. The ``vectors/`` folder (safetensors and JSON
    files) becomes one artifact of type ``steering-vectors``. In offline mode W&B keeps a copy of
    the artifact files, so ``wandb sync`` can upload them later.
    """
    if not is_wandb(logger):
        return
    import wandb

    run = logger.experiment
    media: dict[str, Any] = {}
    for path in sorted((out_dir / "heatmaps").glob("*.png")):
        media[f"heatmaps/{path.stem}"] = wandb.Image(str(path), caption=path.stem)
    media["results/comparison"] = comparison_table(results["comparison"])
    run.log(media)
    for row in results["comparison"]:
        run.summary[f"test/{row['name']}/acc"] = row["test_acc"]
        run.summary[f"test/{row['name']}/effect"] = row["effect"]

    vectors = out_dir / "vectors"
    if vectors.is_dir() and any(vectors.iterdir()):
        metadata = {key: results.get(key) for key in ("task", "task_group", "method", "model", "seed", "site")}
        artifact = wandb.Artifact(artifact_name(results), type="steering-vectors", metadata=metadata)
        artifact.add_dir(str(vectors))
        run.log_artifact(artifact)
    log.info("Uploaded heatmaps, comparison table and vectors to W&B run %s", run.id)
