"""One Hydra job: run a task, and on failure record it in ``results.json`` instead of losing it.

A single run that fails on bad input exits with status 1 and the message, without a traceback.
Inside a multirun a failed job writes ``{"status": "failed", ...}`` to its own ``results.json``,
logs the error and returns, so the other jobs still run. The sweep summary (pas.sweep_summary)
then lists it, and ``train.py`` exits non-zero.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pas.errors import UserError
from pas.io import atomic_write_json
from pas.objective import sweep_objective
from pas.pipeline import run

log = logging.getLogger(__name__)


def in_multirun() -> bool:
    """Return True inside a Hydra multirun job (``-m``), False in a single run or outside Hydra."""
    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().mode == RunMode.MULTIRUN


def failure_record(cfg: DictConfig, error: BaseException) -> dict[str, Any]:
    """Describe a failed job with the keys that the sweep summary reads."""
    return {
        "status": "failed",
        "task": OmegaConf.select(cfg, "task.name", default=None),
        "method": OmegaConf.select(cfg, "method.name", default=None),
        "seed": OmegaConf.select(cfg, "seed", default=None),
        "error": str(error),
        "error_type": type(error).__name__,
    }


def write_failure(cfg: DictConfig, error: BaseException) -> None:
    """Write the failure record to ``<output_dir>/results.json``; a folder that cannot be written is logged."""
    try:
        out_dir = Path(str(OmegaConf.select(cfg, "output_dir", default=".")))
        atomic_write_json(out_dir / "results.json", failure_record(cfg, error))
    except Exception as write_error:  # noqa: BLE001 - the original error is the one to report
        log.error("Could not record the failure in results.json: %s", write_error)


def run_job(cfg: DictConfig) -> float:
    """Run one task and return its objective; a failure in a multirun returns NaN after recording it.

    The basic and joblib launchers ignore the value, and a sweeper that optimizes it gets NaN for a failed job.
    """
    multirun = in_multirun()
    try:
        results = run(cfg)
    except UserError as err:
        log.error("%s", err)
        write_failure(cfg, err)
        if not multirun:
            sys.exit(1)
        return math.nan
    except Exception as err:
        # An unexpected error is a bug or an environment problem, so its traceback goes to the log.
        log.exception("The job failed with an unexpected %s", type(err).__name__)
        write_failure(cfg, err)
        if not multirun:
            raise
        return math.nan
    return sweep_objective(results)
