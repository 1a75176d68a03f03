"""Fit, select and test PAS steering vectors: `python train.py task=... model=... seed=...`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pas.cli import run_cli
from pas.jobs import run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one task and return the sweep objective, the mean selected validation accuracy (pas.objective)."""
    return run_job(cfg)


if __name__ == "__main__":
    run_cli(main)
