"""Saved run state under ``<output_dir>/state/``, so that a killed run continues with ``resume=true``.

What is saved, each file written atomically (pas.io) in safetensors or JSON, never pickle:

- ``config.json``: the resolved config; a resumed run must have the same one.
- ``<stage>/fit.safetensors`` and ``fit.json``: a PAS stage's vectors at every grid layer, the
  positive and negative counts and the train predictions, once its fitting epoch has finished.
- ``<stage>/sweep.json``: the validation accuracy of every finished (variant, layer, strength),
  written after each chunk of ``sweep.configs_per_pass`` configurations.
- ``epochs/<name>/progress.json`` with ``epoch-<k>.safetensors`` and ``best-<k>.safetensors``: the
  trained weights, optimizer state and torch random state after each finished epoch of a trained
  stage (LoRA fine-tuning, a trained vector) and the weights of the best epoch so far.
  ``progress.json`` is written last and names the files it belongs to, so a kill between two
  writes leaves the previous epoch's state in force.

A resumed run redoes only unfinished work and, on CPU, ends with the same ``results.json`` apart from
``timings_s``.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from pas.errors import UserError
from pas.io import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

STATE_DIR = "state"
# Keys that may change between the killed run and its resumption without changing any result.
_IGNORED_KEYS = ("resume", "output_dir", "cache_dir")


class ResumeError(UserError, RuntimeError):
    """The saved state cannot be used to resume this run."""


def _config_dict(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for key in _IGNORED_KEYS:
        container.pop(key, None)
    return json.loads(json.dumps(container, sort_keys=True, default=str))


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current)):
            name = f"{prefix}.{key}" if prefix else key
            found += _differences(saved.get(key), current.get(key), name)
        return found
    return [] if saved == current else [f"{prefix}: {saved!r} -> {current!r}"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ResumeError(f"cannot read the saved state {path}: {err}; rerun with resume=false") from err


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise ResumeError(f"cannot read the saved state {path}: {err}; rerun with resume=false") from err


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    blob = safetensors_bytes({name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()})
    atomic_write_bytes(path, blob)


@dataclass
class FitState:
    """A PAS stage's fitted vectors ``(len(layers), H)`` per variant, text counts and train predictions."""

    vectors: dict[str, torch.Tensor]
    counts: dict[str, dict[str, int]]
    train_records: list[dict[str, Any]]


class RunState:
    """Reads and writes the ``state/`` folder of one run."""

    def __init__(self, out_dir: Path, cfg: DictConfig, resume: bool) -> None:
        self.folder = Path(out_dir) / STATE_DIR
        self.resume = resume
        config = _config_dict(cfg)
        config_file = self.folder / "config.json"
        if not resume:
            # A fresh run in an old output folder must not pick up that run's state later.
            shutil.rmtree(self.folder, ignore_errors=True)
        elif config_file.is_file():
            differences = _differences(_read_json(config_file), config)
            if differences:
                raise ResumeError(
                    f"resume=true, but the config differs from the saved run in {self.folder}: "
                    + "; ".join(differences[:10])
                    + ". Rerun with the same overrides, or with resume=false to start over"
                )
            log.info("Resuming from the saved state in %s", self.folder)
        else:
            log.info("resume=true, but %s contains no saved state; starting from the beginning", self.folder)
        atomic_write_json(config_file, config)

    def _stage_dir(self, tag: str) -> Path:
        return self.folder / tag.replace("+", "_")

    # PAS fitting -------------------------------------------------------------------------------

    def load_fit(self, tag: str) -> FitState | None:
        """Return the saved fit of stage ``tag`` when resuming and it exists, else None."""
        meta_path = self._stage_dir(tag) / "fit.json"
        if not self.resume or not meta_path.is_file():
            return None
        meta = _read_json(meta_path)
        tensors = _read_tensors(self._stage_dir(tag) / meta["tensors"])
        log.info("%s: reusing the fitted vectors saved in %s", tag, meta_path.parent)
        vectors = {variant: tensors[variant] for variant in meta["variants"]}
        return FitState(vectors, meta["counts"], meta["train_records"])

    def save_fit(self, tag: str, fit: FitState) -> None:
        folder = self._stage_dir(tag)
        _write_tensors(folder / "fit.safetensors", fit.vectors)
        meta = {
            "tensors": "fit.safetensors",
            "variants": list(fit.vectors),
            "counts": fit.counts,
            "train_records": fit.train_records,
        }
        atomic_write_json(folder / "fit.json", meta)

    # Sweep -------------------------------------------------------------------------------------

    def load_sweep(self, tag: str) -> dict[str, float]:
        """Return the finished sweep configurations of stage ``tag`` (key ``variant/layer/strength index``)."""
        path = self._stage_dir(tag) / "sweep.json"
        if not self.resume or not path.is_file():
            return {}
        done = _read_json(path)
        log.info("%s: %d sweep configurations already finished", tag, len(done))
        return {key: float(value) for key, value in done.items()}

    def save_sweep(self, tag: str, done: dict[str, float]) -> None:
        atomic_write_json(self._stage_dir(tag) / "sweep.json", done)

    # Trained stages ----------------------------------------------------------------------------

    def epochs_dir(self, name: str) -> Path:
        return self.folder / "epochs" / name


def module_weights(module: L.LightningModule) -> dict[str, torch.Tensor]:
    """Return the trained weights of a module: the LoRA adapter, or the module's own parameters."""
    if hasattr(module, "load_adapter_state"):
        checkpoint: dict[str, Any] = {"state_dict": {}}
        module.on_save_checkpoint(checkpoint)
        return dict(checkpoint["state_dict"])
    return {name: value.detach().cpu() for name, value in module.state_dict().items()}


def load_module_weights(module: L.LightningModule, weights: dict[str, torch.Tensor]) -> None:
    if hasattr(module, "load_adapter_state"):
        module.load_adapter_state(weights)
    else:
        module.load_state_dict(weights)


def _optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    # Splits torch's optimizer state_dict into tensors for safetensors and plain values for JSON.
    tensors, plain = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{name}"] = value
            else:
                plain["state"].setdefault(str(index), {})[name] = value
    return tensors, plain


def _optimizer_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in plain["state"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": plain["param_groups"]}


class EpochStateCallback(L.Callback):
    """Saves the state after every finished epoch and restores it when a fit resumes at ``start_epoch``.

    The best epoch is the one with the highest ``monitor`` value. A later epoch replaces it only
    when strictly better, as Lightning's ModelCheckpoint does with ``mode="max"``.
    """

    def __init__(self, folder: Path, monitor: str, resume: bool) -> None:
        self.folder = folder
        self.monitor = monitor
        self.progress: dict[str, Any] | None = None
        if resume and (folder / "progress.json").is_file():
            self.progress = _read_json(folder / "progress.json")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def start_epoch(self) -> int:
        return 0 if self.progress is None else int(self.progress["epoch"]) + 1

    def best_weights(self) -> tuple[dict[str, torch.Tensor], float, int]:
        """Return the weights, score and epoch of the best epoch saved so far."""
        assert self.progress is not None, "no finished epoch"
        tensors = _read_tensors(self.folder / self.progress["best_file"])
        return tensors, float(self.progress["best_score"]), int(self.progress["best_epoch"])

    def restore_weights(self, module: L.LightningModule) -> None:
        """Load the last finished epoch's weights into ``module`` before the fit continues."""
        if self.progress is not None:
            tensors = _read_tensors(self.folder / self.progress["last_file"])
            weights = {k.removeprefix("weights/"): v for k, v in tensors.items() if k.startswith("weights/")}
            load_module_weights(module, weights)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is None:
            return
        tensors = _read_tensors(self.folder / self.progress["last_file"])
        trainer.optimizers[0].load_state_dict(_optimizer_state(tensors, self.progress["optimizer"]))
        # NOTE: only the CPU generator is saved, so on a GPU a resumed run may draw other dropout masks.
        torch.set_rng_state(tensors["rng/torch"])
        log.info("Resuming %s after epoch %d", self.folder.name, self.progress["epoch"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = self.start_epoch + trainer.current_epoch
        if self.monitor not in trainer.callback_metrics:
            raise ResumeError(f"the metric {self.monitor!r} was not logged in epoch {epoch}; check limit_val_batches")
        score = float(trainer.callback_metrics[self.monitor])
        weights = module_weights(pl_module)
        previous = self.progress
        progress = dict(previous) if previous is not None else {}
        if previous is None or score > float(previous["best_score"]):
            progress.update(best_score=score, best_epoch=epoch, best_file=f"best-{epoch}.safetensors")
            _write_tensors(self.folder / progress["best_file"], weights)
        optimizer_tensors, optimizer_plain = _optimizer_tensors(trainer.optimizers[0].state_dict())
        tensors = {f"weights/{k}": v for k, v in weights.items()} | optimizer_tensors
        tensors["rng/torch"] = torch.get_rng_state()
        progress.update(epoch=epoch, last_file=f"epoch-{epoch}.safetensors", optimizer=optimizer_plain)
        _write_tensors(self.folder / progress["last_file"], tensors)
        atomic_write_json(self.folder / "progress.json", progress)
        self.progress = progress
        # Files of earlier epochs are no longer named by progress.json.
        keep = {progress["last_file"], progress["best_file"], "progress.json"}
        for path in self.folder.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)
