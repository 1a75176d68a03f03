"""Fit, select and test PAS steering vectors: `python train.py task=... model=... seed=...`."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from pas.errors import UserError
from pas.objective import sweep_objective
from pas.pipeline import run

log = logging.getLogger("pas.train")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one task and return the sweep objective, the mean selected validation accuracy (pas.objective)."""
    try:
        results = run(cfg)
    except UserError as err:
        log.error("%s", err)
        sys.exit(1)
    return sweep_objective(results)


if __name__ == "__main__":
    main()
