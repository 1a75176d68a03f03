"""Steering-vector estimators beside the PAS mean difference: PCA, a logistic-regression probe, and CAA.

``pca`` and ``probe`` read the per-text activations of one PAS contrast set (``method.estimators.contrast``,
``ipas_wrong_only`` by default), so they see exactly the positive and negative texts of that variant and
differ from it only in how the direction is estimated. Both return a direction rescaled to the norm of the
contrast set's mean difference ``mean(h(pos)) - mean(h(neg))``, so one strength grid fits every estimator.

- ``pca``: the first principal component of the paired differences ``d = h(pos) - h(neg)``, uncentered
  (the top right-singular vector of the difference matrix), so a shift that every pair shares counts as
  signal. Its sign is chosen so that it points along the mean difference. When the contrast set is
  paired (``ipas_wrong_only``: one positive and one negative text per wrong item) the pairs are those
  items. Other contrast sets (``pasf``, ``ipas_all``) set right items against wrong items, usually
  unequal in number. There every positive is paired with every negative. The second-moment matrix of
  those ``P * N`` differences is computed in closed form as ``Cov(pos) + Cov(neg) + m m^T``, with ``m``
  the mean difference and each covariance normalized by its own count.
- ``probe``: the weight vector of an L2-regularized logistic regression that separates positive (1)
  from negative (0) activations. Features are standardized (mean and standard deviation over all texts),
  the two classes get equal total weight, and the loss is
  ``0.5 * mean_pos(log(1 + e^-z)) + 0.5 * mean_neg(log(1 + e^z)) + l2 / 2 * ||w||^2`` with ``z = w . x_std + b``.
  It is minimized with full-batch L-BFGS from zero, so the fit is deterministic and needs no seed. The
  direction in activation space is ``w / std`` (the gradient of ``z`` with respect to the raw activation).
- ``caa``: the mean of per-pair differences over a file of hand-written (positive, negative) texts,
  read with :func:`load_caa_pairs`. The texts do not come from the task, so it needs no train split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pas.data.prompts import PromptFormat, render_completion
from pas.errors import UserError
from pas.steering.builders import VARIANTS

ESTIMATORS: tuple[str, ...] = ("pca", "probe", "caa")
# Estimators that read the activations of a PAS contrast set.
CONTRAST_ESTIMATORS: tuple[str, ...] = ("pca", "probe")


class CAAPairsError(UserError, ValueError):
    """The CAA pairs file is missing or has an invalid record."""


@dataclass(frozen=True)
class EstimatorSettings:
    """Settings of the estimator variants ``pca``, ``probe`` and ``caa`` (``method.estimators``)."""

    contrast: str = "ipas_wrong_only"  # the PAS contrast set whose texts pca and probe read
    probe_l2: float = 1.0  # L2 penalty on the standardized probe weights
    probe_max_iter: int = 200  # L-BFGS iterations of the probe fit
    caa_pairs: str | None = None  # jsonl file of {"prompt"?, "positive", "negative"} records, needed by caa


@dataclass(frozen=True)
class CAAPair:
    """One hand-written contrast: the same optional ``prompt`` followed by a positive or a negative text."""

    positive: str
    negative: str
    prompt: str | None = None


def load_caa_pairs(path: str | Path) -> list[CAAPair]:
    """Read a jsonl file of CAA pairs, one JSON object per line.

    Fields: ``positive`` and ``negative`` (non-empty strings, required) and ``prompt`` (optional
    string shown before both). Blank lines are skipped. Every invalid record is listed in one error.
    """
    source = Path(path)
    if not source.is_file():
        raise CAAPairsError(
            f"CAA pairs file not found: {source}; set method.estimators.caa_pairs to a jsonl file of "
            '{"prompt": ..., "positive": ..., "negative": ...} records, e.g. examples/caa_pairs.jsonl'
        )
    pairs: list[CAAPair] = []
    problems: list[str] = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"line {number}: invalid JSON ({err.msg})")
            continue
        if not isinstance(record, dict):
            problems.append(f"line {number}: expected a JSON object, got {type(record).__name__}")
            continue
        bad = [key for key in ("positive", "negative") if not isinstance(record.get(key), str) or not record[key]]
        prompt = record.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            bad.append("prompt")
        if bad:
            problems.append(f"line {number}: {bad} must be non-empty strings (prompt may be left out)")
            continue
        pairs.append(CAAPair(record["positive"], record["negative"], prompt or None))
    if problems:
        raise CAAPairsError(f"invalid CAA pairs file {source}:\n  - " + "\n  - ".join(problems))
    if not pairs:
        raise CAAPairsError(f"CAA pairs file {source} has no pairs; add at least one JSON line")
    return pairs


def mean_difference(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Return ``mean(pos) - mean(neg)`` over the first dimension, ``(P, H), (N, H) -> (H,)``."""
    return positive.double().mean(0) - negative.double().mean(0)


def _rescale(direction: torch.Tensor, mean_diff: torch.Tensor) -> torch.Tensor:
    return direction / direction.norm().clamp_min(1e-30) * mean_diff.norm()


def pca_direction(positive: torch.Tensor, negative: torch.Tensor, paired: bool) -> torch.Tensor:
    """Return the first principal component of the paired differences, as this module's docstring defines.

    ``positive`` is ``(P, H)`` and ``negative`` is ``(N, H)``; with ``paired`` row ``i`` of each
    forms pair ``i`` (so ``P == N``). The result has shape ``(H,)`` in float64, points along the mean
    difference and has its norm.
    """
    pos, neg = positive.double(), negative.double()
    mean_diff = mean_difference(pos, neg)
    if paired:
        if pos.shape != neg.shape:
            raise ValueError(f"paired PCA needs as many positives as negatives, got {pos.shape} and {neg.shape}")
        rows = (pos - neg) / len(pos) ** 0.5  # (P, H): rows.T @ rows is the mean of d d^T
    else:
        # rows.T @ rows = Cov(pos) + Cov(neg) + m m^T, the mean of d d^T over all P * N pairs.
        rows = torch.cat(
            [
                (pos - pos.mean(0)) / len(pos) ** 0.5,
                (neg - neg.mean(0)) / len(neg) ** 0.5,
                mean_diff.unsqueeze(0),
            ]
        )
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    direction = vh[0]
    if torch.dot(direction, mean_diff) < 0:
        direction = -direction
    return _rescale(direction, mean_diff)


def probe_direction(
    positive: torch.Tensor, negative: torch.Tensor, l2: float = 1.0, max_iter: int = 200
) -> torch.Tensor:
    """Fit the logistic-regression probe of this module's docstring and return its direction ``(H,)``.

    The direction is ``w / std`` in activation space, rescaled to the norm of the mean difference.
    """
    if l2 < 0 or max_iter < 1:
        raise ValueError(f"probe needs l2 >= 0 and max_iter >= 1, got l2={l2}, max_iter={max_iter}")
    pos, neg = positive.double(), negative.double()
    features = torch.cat([pos, neg])
    center = features.mean(0)
    scale = features.std(0, unbiased=False)
    # A feature that is constant over all texts carries no signal, and dividing it by 1 keeps it at zero.
    scale = torch.where(scale > 1e-8 * scale.max().clamp_min(1e-30), scale, torch.ones_like(scale))
    x_pos, x_neg = (pos - center) / scale, (neg - center) / scale
    weight = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss_pos = torch.nn.functional.softplus(-(x_pos @ weight + bias)).mean()
        loss_neg = torch.nn.functional.softplus(x_neg @ weight + bias).mean()
        loss = 0.5 * (loss_pos + loss_neg) + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    direction = weight.detach() / scale
    return _rescale(direction, mean_difference(pos, neg))


def estimate(
    name: str, positive: torch.Tensor, negative: torch.Tensor, paired: bool, settings: EstimatorSettings
) -> torch.Tensor:
    """Return the direction of estimator ``name`` (``pca`` or ``probe``) at one layer, ``(H,)`` in float64."""
    if name == "pca":
        return pca_direction(positive, negative, paired)
    if name == "probe":
        return probe_direction(positive, negative, settings.probe_l2, settings.probe_max_iter)
    raise ValueError(f"{name!r} does not read a contrast set; use one of {list(CONTRAST_ESTIMATORS)}")


class ActivationCollector:
    """Keeps the per-text activations of one contrast set for the estimators that need more than sums.

    The PAS mean difference needs only sums and counts. PCA and the probe need every text's
    activation, ``(texts, layers, H)`` per side, kept in float32 on the CPU. Under DDP each
    process collects the texts of its own shard and :meth:`gather` all-gathers them, so every
    process fits the same direction from all texts. Rows arrive in process order rather than item order,
    which PCA and the full-batch probe do not depend on beyond float rounding.
    """

    def __init__(self, contrast: str) -> None:
        self.contrast = contrast
        self.positive: list[torch.Tensor] = []
        self.negative: list[torch.Tensor] = []
        # True while every batch paired positive k with negative k of the same item.
        self.paired = True

    def add(self, positive: torch.Tensor, negative: torch.Tensor, paired: bool) -> None:
        """Append one batch: ``positive`` is ``(P, L, H)`` and ``negative`` is ``(N, L, H)``."""
        self.paired = self.paired and paired
        if len(positive):
            self.positive.append(positive.detach().float().cpu())
        if len(negative):
            self.negative.append(negative.detach().float().cpu())

    @staticmethod
    def _stack(parts: list[torch.Tensor], layers: int, hidden: int) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, layers, hidden)

    def gather(self, module: Any, layers: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return all positive and negative rows, ``(P, L, H)`` and ``(N, L, H)``, all-gathered under DDP.

        ``module`` is the LightningModule. Its ``all_gather`` needs equal shapes on every process,
        so each side is padded to the largest count and cut back after the gather.
        """
        sides = [self._stack(self.positive, layers, hidden), self._stack(self.negative, layers, hidden)]
        trainer = getattr(module, "_trainer", None)
        if trainer is None or trainer.world_size <= 1:
            return sides[0], sides[1]
        gathered = []
        for rows in sides:
            counts = module.all_gather(torch.tensor([len(rows)], device=module.device)).reshape(-1).tolist()
            padded = torch.zeros(max(counts), layers, hidden)
            padded[: len(rows)] = rows
            everything = module.all_gather(padded.to(module.device)).cpu()  # (world, max, L, H)
            gathered.append(torch.cat([everything[rank, :count] for rank, count in enumerate(counts)]))
        paired = module.all_gather(torch.tensor([float(self.paired)], device=module.device))
        self.paired = bool(paired.min() > 0)
        return gathered[0], gathered[1]

    def counts(self) -> dict[str, int]:
        return {
            "positive": sum(len(part) for part in self.positive),
            "negative": sum(len(part) for part in self.negative),
        }


def fit_contrast_estimators(
    names: Sequence[str], positive: torch.Tensor, negative: torch.Tensor, paired: bool, settings: EstimatorSettings
) -> dict[str, torch.Tensor]:
    """Fit each estimator at every layer: ``(P, L, H), (N, L, H) -> {name: (L, H)}`` in float32."""
    table = {}
    for name in names:
        rows = [estimate(name, positive[:, k], negative[:, k], paired, settings) for k in range(positive.shape[1])]
        table[name] = torch.stack(rows).float()
    return table


def render_caa_pair(pair: CAAPair, fmt: PromptFormat, tokenizer: Any = None) -> tuple[str, str]:
    """Return the positive and negative texts of one pair.

    Without a ``prompt`` the texts are used as written. With one, each text is the prompt followed
    directly by the completion (no separator is added), or, with ``prompt.chat_template``, the prompt
    as the user turn and the completion as the start of the assistant's answer.
    """
    if pair.prompt is None:
        return pair.positive, pair.negative
    return (
        render_completion(pair.prompt, pair.positive, fmt, tokenizer),
        render_completion(pair.prompt, pair.negative, fmt, tokenizer),
    )


def estimator_settings(node: Any) -> EstimatorSettings:
    """Build the settings from the ``method.estimators`` config node (or None for the defaults)."""
    if node is None:
        return EstimatorSettings()
    return EstimatorSettings(**{key: node[key] for key in node})


def check_estimator_settings(variants: Sequence[str], node: Any) -> list[str]:
    """Return every problem with ``method.estimators`` for the chosen ``variants``, for the config check."""
    problems: list[str] = []
    known = set(EstimatorSettings.__dataclass_fields__)
    unknown = sorted(set(node or {}) - known)
    if unknown:
        problems.append(f"method.estimators has unknown keys {unknown}; known keys: {sorted(known)}")
        return problems
    settings = estimator_settings(node)
    if any(v in CONTRAST_ESTIMATORS for v in variants) and settings.contrast not in VARIANTS:
        problems.append(f"method.estimators.contrast must be one of {list(VARIANTS)}, got {settings.contrast!r}")
    l2 = settings.probe_l2
    if "probe" in variants and (isinstance(l2, bool) or not isinstance(l2, (int, float)) or not 0 <= l2 < float("inf")):
        problems.append(f"method.estimators.probe_l2 must be a finite number >= 0, got {l2!r}")
    iters = settings.probe_max_iter
    if "probe" in variants and (isinstance(iters, bool) or not isinstance(iters, int) or iters < 1):
        problems.append(f"method.estimators.probe_max_iter must be a positive integer, got {iters!r}")
    if "caa" in variants:
        if not settings.caa_pairs:
            problems.append(
                "method.variants has caa but method.estimators.caa_pairs is not set; point it at a jsonl file "
                "of pairs, e.g. method.estimators.caa_pairs=examples/caa_pairs.jsonl"
            )
        elif not Path(settings.caa_pairs).is_file():
            problems.append(f"method.estimators.caa_pairs file not found: {settings.caa_pairs}")
    return problems
