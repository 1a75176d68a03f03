"""Run-config checks that report every problem in one error, and Hydra helpers."""

from __future__ import annotations

import math
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from pas.errors import UserError
from pas.models.layers import SITES
from pas.steering.builders import VARIANTS
from pas.steering.engines import ENGINES
from pas.steering.estimators import ESTIMATORS, check_estimator_settings


class ConfigError(UserError, ValueError):
    """The composed run config has invalid values; the message lists all of them."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_data(cfg: DictConfig, problems: list[str]) -> None:
    data = cfg.data
    size = data.max_sample_size
    if size is not None and (not _is_int(size) or size < 3):
        problems.append(f"data.max_sample_size must be null or an integer >= 3, got {size!r}")
    train_size = data.get("train_size")
    if train_size is not None and (not _is_int(train_size) or train_size < 1):
        problems.append(f"data.train_size must be null (whole train split) or a positive integer, got {train_size!r}")
    split = list(data.split) if isinstance(data.split, ListConfig) else data.split
    if (
        not isinstance(split, list)
        or len(split) != 3
        or not all(_is_number(f) and f > 0 for f in split)
        or abs(sum(split) - 1.0) > 1e-6
    ):
        problems.append(f"data.split must be three positive fractions summing to 1, got {split!r}")
    if not _is_int(data.batch_size) or data.batch_size < 1:
        problems.append(f"data.batch_size must be a positive integer, got {data.batch_size!r}")
    on_error = data.get("on_error", "raise")
    if on_error not in ("raise", "skip"):
        problems.append(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")


def _check_method(cfg: DictConfig, problems: list[str]) -> None:
    method = cfg.method
    variants = list(method.variants or [])
    unknown = [v for v in variants if v not in VARIANTS + ESTIMATORS]
    if not variants or unknown:
        problems.append(
            f"method.variants must be a non-empty subset of {list(VARIANTS + ESTIMATORS)}, got {variants!r}"
        )
    problems += check_estimator_settings(variants, method.get("estimators"))
    if method.site not in SITES:
        problems.append(f"method.site must be one of {list(SITES)}, got {method.site!r}")
    strengths = list(method.strengths or [])
    if not strengths:
        problems.append("method.strengths is empty; list at least one strength, e.g. method.strengths=[1,2,4]")
    bad = [s for s in strengths if not _is_number(s) or not math.isfinite(s)]
    if bad:
        problems.append(f"method.strengths must be finite numbers, got {bad!r}")
    layers = method.layers
    if layers is not None and (not isinstance(layers, ListConfig) or not layers or not all(_is_int(x) for x in layers)):
        problems.append(f"method.layers must be null (automatic) or a non-empty list of integers, got {layers!r}")


def validate_run_config(cfg: DictConfig) -> None:
    """Check the composed config and raise one ConfigError listing every problem found."""
    problems: list[str] = []
    if not _is_int(cfg.seed):
        problems.append(f"seed must be an integer, got {cfg.seed!r}")
    _check_data(cfg, problems)
    _check_method(cfg, problems)
    if cfg.sweep.engine not in ENGINES:
        problems.append(f"sweep.engine must be one of {list(ENGINES)}, got {cfg.sweep.engine!r}")
    if not _is_int(cfg.sweep.configs_per_pass) or cfg.sweep.configs_per_pass < 1:
        problems.append(f"sweep.configs_per_pass must be a positive integer, got {cfg.sweep.configs_per_pass!r}")
    if not _is_int(cfg.sweep.batch_size) or cfg.sweep.batch_size < 1:
        problems.append(f"sweep.batch_size must be a positive integer, got {cfg.sweep.batch_size!r}")
    if "run" not in cfg.method or "_target_" not in cfg.method.run:
        problems.append("method.run must name a method function with _target_; pick a method from conf/method/")
    if "loader" not in cfg.task or "_target_" not in cfg.task.loader:
        problems.append("task.loader must name a loader with _target_; pick a task from conf/task/")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def auto_layers(num_layers: int, count: int = 10) -> list[int]:
    """Spread ``count`` layers evenly over the middle of the model (25% to 80% of its depth)."""
    low, high = round(0.25 * (num_layers - 1)), round(0.8 * (num_layers - 1))
    if high - low + 1 <= count:
        return list(range(low, high + 1))
    return sorted({round(low + k * (high - low) / (count - 1)) for k in range(count)})


def call_target(node: Any, **kwargs: Any) -> Any:
    """Instantiate a Hydra ``_target_`` node, re-raising user errors unwrapped so their message stays short."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


def to_container(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container
