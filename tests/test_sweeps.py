"""Hydra launchers and sweepers: configs compose, joblib runs jobs in parallel, Optuna searches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from optuna.distributions import CategoricalDistribution, LogUniformDistribution, UniformDistribution

from pas.objective import sweep_objective
from tests.test_train import ROOT, _save_model, _write_task

LAUNCHERS = {
    "basic": "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
    "slurm": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
}
OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
SWEEPERS = {
    "basic": ("method=pas", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"),
    "optuna": ("method=pas", OPTUNA),
    "sft_lora_search": ("method=sft_pas", OPTUNA),
    "trained_vector_search": ("method=pas_trained", OPTUNA),
}


def _compose_hydra(overrides: list[str]):  # noqa: ANN202
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_config_composes(name: str) -> None:
    cfg = _compose_hydra([f"hydra/launcher={name}"])
    assert cfg.hydra.launcher._target_ == LAUNCHERS[name]


def test_slurm_launcher_defaults() -> None:
    launcher = _compose_hydra(["hydra/launcher=slurm"]).hydra.launcher
    assert launcher.partition is None
    assert launcher.gpus_per_node == 1
    assert launcher.tasks_per_node == 1
    assert launcher.timeout_min == 240
    assert launcher.mem_gb == 64
    assert launcher.array_parallelism == 32
    assert list(launcher.setup) == []
    changed = _compose_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4"])
    assert changed.hydra.launcher.partition == "gpu"
    assert changed.hydra.launcher.gpus_per_node == 4


@pytest.mark.parametrize("name", sorted(SWEEPERS))
def test_sweeper_config_composes(name: str) -> None:
    method, target = SWEEPERS[name]
    cfg = _compose_hydra([f"hydra/sweeper={name}", method])
    assert cfg.hydra.sweeper._target_ == target


@pytest.mark.parametrize(
    ("name", "method", "expected"),
    [
        (
            "sft_lora_search",
            "method=sft_pas",
            {"method.run.lr": LogUniformDistribution(1e-5, 1e-2), "method.run.rank": (2, 4, 8, 16, 32)},
        ),
        (
            "trained_vector_search",
            "method=pas_trained",
            {"method.run.lr": LogUniformDistribution(1e-4, 1e-1), "method.run.l2": UniformDistribution(0.0, 0.01)},
        ),
    ],
)
def test_optuna_search_space(name: str, method: str, expected: dict) -> None:
    cfg = _compose_hydra([f"hydra/sweeper={name}", method])
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize"
    assert sweeper.storage is None
    params = [f"{key}={value}" for key, value in sweeper.params.items()]
    distributions, fixed = create_params_from_overrides(params)
    assert fixed == {}
    assert distributions.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, tuple):
            assert isinstance(distributions[key], CategoricalDistribution)
            assert distributions[key].choices == value
        else:
            assert distributions[key] == value
    # Every searched key exists in the composed method config, so a trial's override applies.
    run_cfg = _compose_hydra([method])
    for key in distributions:
        assert key.removeprefix("method.run.") in run_cfg.method.run


def _row(name: str, val_acc: float | None) -> dict:
    return {"name": name, "val_acc": val_acc}


def test_objective_uses_final_stage() -> None:
    pas_rows = [
        _row("unsteered", 0.1),
        _row("pas/pasf", 0.5),
        _row("pas/ipas_all", 0.25),
        _row("pas/ipas_wrong_only", 0.75),
    ]
    assert sweep_objective({"comparison": pas_rows}) == pytest.approx(0.5)

    sft_rows = [*pas_rows, _row("sft", 0.3), _row("sft+pas/pasf", 0.2), _row("sft+pas/ipas_all", 0.6)]
    assert sweep_objective({"comparison": sft_rows}) == pytest.approx(0.4)

    trained_rows = [*pas_rows, _row("pas_trained", 0.35)]
    assert sweep_objective({"comparison": trained_rows}) == pytest.approx(0.35)


def test_objective_without_val_acc() -> None:
    with pytest.raises(ValueError, match="no comparison row with a validation accuracy"):
        sweep_objective({"comparison": [_row("unsteered", None)]})


def _tiny_args(model_dir: Path, task: Path, *extra: str) -> list[str]:
    return [
        "model=hf",
        f"model.load.name_or_path={model_dir}",
        "model.load.device=cpu",
        "task=generic",
        f"task.loader.path={task}",
        "method.layers=[1,2]",
        "method.strengths=[1,4]",
        "data.batch_size=8",
        "sweep.batch_size=8",
        "trainer.enable_progress_bar=false",
        *extra,
    ]


def _multirun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # One thread per job: the jobs of a parallel launcher share the machine's cores.
    env = {**os.environ, "PAS_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("PAS_DATA_ROOT", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sweeps")
    return _save_model(folder / "model"), _write_task(folder / "items.jsonl", 20)


def test_joblib_multirun_two_folders(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, task = tiny
    args = _tiny_args(model_dir, task, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2")
    result = _multirun(args, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = tmp_path / "sweep"
    folders = sorted(path.name for path in sweep.iterdir() if path.is_dir())
    assert folders == ["0", "1"]
    seeds = {json.loads((sweep / name / "results.json").read_text())["seed"] for name in folders}
    assert seeds == {1, 2}
    for name in folders:
        assert (sweep / name / "vectors" / "ipas_all.safetensors").is_file()
        assert (sweep / name / "csv" / "metrics.csv").is_file()
    assert (sweep / "multirun.yaml").is_file()


def test_optuna_two_trials(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, task = tiny
    extra = ("method=sft_pas", "method.run.epochs=1", "hydra/sweeper=sft_lora_search", "hydra.sweeper.n_trials=2")
    result = _multirun(_tiny_args(model_dir, task, *extra), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = tmp_path / "sweep"
    trials = []
    for name in ("0", "1"):
        results = json.loads((sweep / name / "results.json").read_text())
        overrides = yaml.safe_load((sweep / name / ".hydra" / "overrides.yaml").read_text())
        params = dict(item.split("=", 1) for item in overrides if item.startswith("method.run."))
        assert 1e-5 <= float(params["method.run.lr"]) <= 1e-2
        assert int(params["method.run.rank"]) in (2, 4, 8, 16, 32)
        assert float(params["method.run.lr"]) == pytest.approx(results_lr(sweep / name))
        trials.append((sweep_objective(results), params))
    summary = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_value, best_params = max(trials, key=lambda trial: trial[0])
    assert summary["best_value"] == pytest.approx(best_value)
    assert float(summary["best_params"]["method.run.lr"]) == pytest.approx(float(best_params["method.run.lr"]))
    assert int(summary["best_params"]["method.run.rank"]) == int(best_params["method.run.rank"])


def results_lr(run_dir: Path) -> float:
    """Return the LoRA learning rate the run used, from its resolved config."""
    return float(yaml.safe_load((run_dir / "config_resolved.yaml").read_text())["method"]["run"]["lr"])
