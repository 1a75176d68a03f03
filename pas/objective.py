"""The value a run returns to Hydra sweepers (Optuna maximizes it): a validation accuracy."""

from __future__ import annotations

from typing import Any


def stage_of(row_name: str) -> str:
    """Return the stage a comparison row belongs to: ``sft+pas/pasf`` -> ``sft+pas``, ``icl`` -> ``icl``."""
    return row_name.split("/", 1)[0]


def sweep_objective(results: dict[str, Any]) -> float:
    """Return the mean selected validation accuracy of the method's final stage.

    The final stage is the stage of the last comparison row: ``pas`` for PAS alone, ``sft+pas``
    for SFT+PAS, ``icl+pas`` for ICL+PAS and ``pas_trained`` for the trained vector. So the value
    depends on a method's own hyperparameters (the LoRA learning rate, for example). For PAS alone
    it is the mean over the variants of their best validation accuracy.
    """
    rows = [row for row in results["comparison"] if row.get("val_acc") is not None]
    if not rows:
        raise ValueError("results have no comparison row with a validation accuracy")
    final = stage_of(rows[-1]["name"])
    accuracies = [row["val_acc"] for row in rows if stage_of(row["name"]) == final]
    return sum(accuracies) / len(accuracies)
