"""Experiment overlays: each composes, validates, instantiates its trainer and logger, and sweeps real options."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from pas.config import call_target, validate_run_config
from tests.test_train import ROOT

EXPERIMENTS = sorted(path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml"))
PAPER_MODELS = {
    "llama31_8b_instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "deepseek_r1_distill_llama_8b": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "nous_hermes2_mistral_7b_dpo": "NousResearch/Nous-Hermes-2-Mistral-7B-DPO",
}
PAPER_LAYERS = [8, 11, 13, 14, 15, 16, 17, 19, 22, 25]
PAPER_STRENGTHS = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32]
PAPER_GROUPS = {"bias", "morality", "alignment", "intelligence"}


@pytest.fixture(scope="module", autouse=True)
def _hydra() -> Iterator[None]:
    # One Hydra initialization for the module: these tests compose configs dozens of times.
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        yield


def _compose(overrides: list[str], hydra_config: bool = False) -> DictConfig:
    return compose(config_name="config", overrides=overrides, return_hydra_config=hydra_config)


@cache
def _task_group(task: str) -> str:
    return _compose([f"task={task}", "output_dir=unused"]).task.group


def _sweep(cfg: DictConfig) -> dict[str, list]:
    """Expand each ``hydra.sweeper.params`` entry into its list of values, as the basic sweeper does."""
    parser = OverridesParser.create()
    swept = {}
    for key, value in cfg.hydra.sweeper.params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        swept[key] = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    return swept


def test_experiments_found() -> None:
    expected = {
        "paper_pas",
        "paper_icl_pas",
        "paper_sft_pas",
        "paper_forgetting",
        "paper_sample_size",
        "sample_size_smollm2_cpu",
    }
    assert expected <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name: str, tmp_path: Path) -> None:
    cfg = _compose([f"experiment={name}", f"output_dir={tmp_path}"], hydra_config=True)
    assert cfg.study.name == name
    validate_run_config(cfg)
    trainer = call_target(cfg.trainer, logger=call_target(cfg.logger))
    assert isinstance(trainer, L.Trainer)
    assert cfg.hydra.sweep.dir.startswith(f"multirun/{name}/")

    swept = _sweep(cfg)
    assert swept["task"], "an experiment sweeps at least one task"
    groups = {task: group for group, tasks in cfg.study.task_groups.items() for task in tasks}
    for task in swept["task"]:
        assert groups.get(task) == _task_group(task), f"{task}: study group and task config group differ"
    first = _compose([f"experiment={name}", f"task={swept['task'][0]}", f"output_dir={tmp_path}"])
    assert first.task.name == swept["task"][0]
    for model in swept.get("model", [cfg.model]):
        if isinstance(model, str):
            model_cfg = _compose([f"experiment={name}", f"model={model}", f"output_dir={tmp_path}"])
            assert model_cfg.method.layers == model_cfg.model.layer_grid
            validate_run_config(model_cfg)
    for size in swept.get("data.train_size", []):
        assert isinstance(size, int)
        validate_run_config(_compose([f"experiment={name}", f"data.train_size={size}", f"output_dir={tmp_path}"]))


@pytest.mark.parametrize("name", ["paper_pas", "paper_icl_pas", "paper_sft_pas", "paper_forgetting"])
def test_paper_overlays_match_setup(name: str, tmp_path: Path) -> None:
    cfg = _compose([f"experiment={name}", f"output_dir={tmp_path}"], hydra_config=True)
    swept = _sweep(cfg)
    assert swept["seed"] == list(range(15))
    assert dict.fromkeys(swept["model"]) == dict.fromkeys(PAPER_MODELS)
    assert list(cfg.method.strengths) == PAPER_STRENGTHS
    assert set(cfg.study.task_groups) == PAPER_GROUPS
    for model, hub_id in PAPER_MODELS.items():
        model_cfg = _compose([f"experiment={name}", f"model={model}", f"output_dir={tmp_path}"])
        assert model_cfg.model.load.name_or_path == hub_id
        assert model_cfg.model.load.dtype == "bfloat16"
        assert list(model_cfg.method.layers) == PAPER_LAYERS


def test_paper_pas_sweeps_every_grouped_task(tmp_path: Path) -> None:
    cfg = _compose(["experiment=paper_pas", f"output_dir={tmp_path}"], hydra_config=True)
    grouped = [task for tasks in cfg.study.task_groups.values() for task in tasks]
    assert _sweep(cfg)["task"] == grouped
    assert len(grouped) == len(set(grouped))


def test_method_per_paper_variant(tmp_path: Path) -> None:
    methods = {"paper_pas": "pas", "paper_icl_pas": "icl_pas", "paper_sft_pas": "sft_pas", "paper_forgetting": "pas"}
    for name, method in methods.items():
        assert _compose([f"experiment={name}", f"output_dir={tmp_path}"]).method.name == method


def test_forgetting_trains_on_behavior_tasks(tmp_path: Path) -> None:
    cfg = _compose(["experiment=paper_forgetting", f"output_dir={tmp_path}"], hydra_config=True)
    assert _task_group(cfg.study.transfer_task) == "intelligence"
    groups = {task: group for group, tasks in cfg.study.task_groups.items() for task in tasks}
    assert {groups[task] for task in _sweep(cfg)["task"]} == {"bias", "morality", "alignment"}


@pytest.mark.parametrize(
    ("name", "sizes", "max_sample_size"),
    [
        ("paper_sample_size", [12, 24, 48, 96, 192, 384, 768, 1536, 2400], 4000),
        ("sample_size_smollm2_cpu", [12, 24, 48, 96, 180], 300),
    ],
)
def test_sample_size_overlays(name: str, sizes: list[int], max_sample_size: int, tmp_path: Path) -> None:
    cfg = _compose([f"experiment={name}", f"output_dir={tmp_path}"], hydra_config=True)
    assert _sweep(cfg)["data.train_size"] == sizes
    assert cfg.data.max_sample_size == max_sample_size
    # The largest train size is exactly the train split, so validation and test never shrink.
    n_val = int(max_sample_size * cfg.data.split[1])
    n_test = int(max_sample_size * cfg.data.split[2])
    assert max(sizes) == max_sample_size - n_val - n_test


def test_wandb_group_is_study_name(tmp_path: Path) -> None:
    cfg = _compose(["experiment=paper_sft_pas", "logger=wandb", f"output_dir={tmp_path}"])
    assert cfg.logger.group == "paper_sft_pas"
    assert _compose(["logger=wandb", f"output_dir={tmp_path}"]).logger.group is None


def test_cpu_overlay_uses_smollm2(tmp_path: Path) -> None:
    cfg = _compose(["experiment=sample_size_smollm2_cpu", f"output_dir={tmp_path}"], hydra_config=True)
    assert cfg.model.load.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert cfg.trainer.accelerator == "cpu"
    assert set(cfg.method.layers) <= set(range(30))
