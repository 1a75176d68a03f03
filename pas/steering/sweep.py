"""Layer x strength grid search on validation and the selection of the best configuration."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from pas.errors import UserError
from pas.evaluation.scoring import LetterPredictions, scores_from_logits
from pas.models.layers import Site
from pas.steering.engines import Engine

log = logging.getLogger(__name__)


# Larger strengths only saturate the steered state, and far larger ones overflow float32 in later norms.
MAX_ABS_STRENGTH = 1e6


class GridError(UserError, ValueError):
    """The layer or strength grid is empty or contains invalid values."""


def check_grid(layers: Sequence[int], strengths: Sequence[float], num_layers: int) -> None:
    """Raise one error that lists every problem with the grid."""
    problems = []
    if not layers:
        problems.append("method.layers is empty; list at least one layer")
    bad_layers = [x for x in layers if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < num_layers]
    if bad_layers:
        problems.append(
            f"layers {bad_layers} are out of range: the model has {num_layers} decoder layers, "
            f"numbered 0 to {num_layers - 1}"
        )
    if len(set(layers)) != len(layers):
        problems.append(f"method.layers has duplicates: {list(layers)}")
    if not strengths:
        problems.append("method.strengths is empty; list at least one strength")
    bad = [s for s in strengths if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s)]
    if bad:
        problems.append(f"strengths must be finite numbers, got {bad}")
    huge = [s for s in strengths if s not in bad and abs(s) > MAX_ABS_STRENGTH]
    if huge:
        problems.append(
            f"strengths {huge} exceed {MAX_ABS_STRENGTH:g} in absolute value, which swamps the activations of "
            "any model; typical grids stop at 32"
        )
    if problems:
        raise GridError("invalid steering grid: " + "; ".join(problems))


@dataclass
class SweepResult:
    """Validation accuracy of one variant over the grid and the selected configuration."""

    variant: str
    layers: list[int]
    strengths: list[float]
    val_acc: torch.Tensor  # (len(layers), len(strengths))
    best_layer: int = field(init=False)
    best_strength: float = field(init=False)
    best_val_acc: float = field(init=False)

    def __post_init__(self) -> None:
        i, j = select_best(self.val_acc, self.strengths)
        self.best_layer = self.layers[i]
        self.best_strength = self.strengths[j]
        self.best_val_acc = float(self.val_acc[i, j])


def select_best(val_acc: torch.Tensor, strengths: Sequence[float]) -> tuple[int, int]:
    """Return the grid cell with the highest accuracy; ties go to the smaller |strength|, then the earlier layer."""
    best: tuple[float, float, int, int] | None = None
    for i in range(val_acc.shape[0]):
        for j in range(val_acc.shape[1]):
            key = (-float(val_acc[i, j]), abs(strengths[j]), i, j)
            if best is None or key < best:
                best = key
    assert best is not None
    return best[2], best[3]


def predictions_from_logits(logits: torch.Tensor, engine: Engine, n_choices: Sequence[int]) -> LetterPredictions:
    return LetterPredictions.from_scores(scores_from_logits(logits, engine.letter_positions, n_choices))


def steered_predictions(
    engine: Engine, vector: torch.Tensor, layer: int, site: Site, strength: float, n_choices: Sequence[int]
) -> LetterPredictions:
    """Score the engine's prompts with ``strength * vector`` added at ``site`` of ``layer``."""
    logits = engine.steered_logits(layer, site, (strength * vector).unsqueeze(0))[0]
    return predictions_from_logits(logits, engine, n_choices)


def config_key(variant: str, layer: int, strength_index: int) -> str:
    """Name one sweep configuration in the saved progress of a run."""
    return f"{variant}/{layer}/{strength_index}"


def run_sweep(
    engine: Engine,
    vectors: dict[str, torch.Tensor],
    layers: Sequence[int],
    strengths: Sequence[float],
    site: Site,
    targets: Sequence[int],
    n_choices: Sequence[int],
    on_config: Callable[[str, int, float, float], None] | None = None,
    chunk_size: int | None = None,
    done: dict[str, float] | None = None,
    on_chunk: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, SweepResult]:
    """Measure validation accuracy for every variant, layer and strength.

    ``vectors[variant]`` has shape ``(len(layers), H)``; row ``i`` is the vector fitted at ``layers[i]``.
    All variants and strengths of one layer go to the engine together, in chunks of ``chunk_size``
    configurations (all at once when None), so the fast engine can evaluate them in shared passes.
    ``done`` holds accuracies of configurations finished earlier (keys from :func:`config_key`);
    a chunk whose configurations are all there is not evaluated again. Chunk boundaries depend only
    on the grid, so a resumed sweep evaluates exactly the batches of an uninterrupted one.
    ``on_chunk(finished)`` is called with all finished accuracies after each evaluated chunk, and
    ``on_config(variant, layer, strength, acc)`` after each newly evaluated configuration, for logging.
    """
    variants = list(vectors)
    finished = dict(done or {})
    scale = torch.tensor([float(s) for s in strengths]).unsqueeze(1)  # (S, 1)
    grids = {variant: torch.zeros(len(layers), len(strengths)) for variant in variants}
    configs = [(v, j) for v in range(len(variants)) for j in range(len(strengths))]
    step = chunk_size or len(configs)
    for i, layer in enumerate(layers):
        deltas = torch.cat([scale * vectors[variant][i].float().unsqueeze(0) for variant in variants])  # (V*S, H)
        for start in range(0, len(configs), step):
            chunk = configs[start : start + step]
            keys = [config_key(variants[v], layer, j) for v, j in chunk]
            if all(key in finished for key in keys):
                for (v, j), key in zip(chunk, keys):
                    grids[variants[v]][i, j] = finished[key]
                continue
            logits = engine.steered_logits(layer, site, deltas[start : start + len(chunk)])  # (K, N, V')
            for k, ((v, j), key) in enumerate(zip(chunk, keys)):
                preds = predictions_from_logits(logits[k], engine, n_choices)
                acc = preds.accuracy(targets)
                grids[variants[v]][i, j] = acc
                finished[key] = acc
                if on_config is not None:
                    on_config(variants[v], layer, strengths[j], float(grids[variants[v]][i, j]))
            if on_chunk is not None:
                on_chunk(finished)
    results = {}
    for variant in variants:
        results[variant] = SweepResult(variant, list(layers), list(strengths), grids[variant])
        best = results[variant]
        log.info(
            "%s: best layer %d, strength %g, val acc %.3f",
            variant,
            best.best_layer,
            best.best_strength,
            best.best_val_acc,
        )
    return results
