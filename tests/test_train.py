"""End-to-end runs of train.py on a tiny local model and a small generic task."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from pas.pipeline import run
from pas.steering.vector import SteeringVector
from tests.helpers import make_items, tiny_llama, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _write_task(path: Path, n: int, n_choices: int = 3, target: int | None = None) -> Path:
    with path.open("w") as handle:
        for item in make_items(n, n_choices):
            record = {"id": item.id, "question": item.question, "choices": list(item.choices)}
            record["answer"] = item.target if target is None else target
            handle.write(json.dumps(record) + "\n")
    return path


def _save_model(folder: Path, zero_final_norm: bool = False) -> Path:
    model = tiny_llama()
    if zero_final_norm:
        # All logits become 0, so every letter ties and the first letter (A) is always predicted.
        torch.nn.init.zeros_(model.model.norm.weight)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_task(tmp_path_factory.mktemp("task") / "items.jsonl", 40)


def _overrides(model_dir: Path, task: Path, out: Path, *extra: str) -> list[str]:
    return [
        "model=hf",
        f"model.load.name_or_path={model_dir}",
        "model.load.device=cpu",
        "task=generic",
        f"task.loader.path={task}",
        "method.layers=[0,1,2,3]",
        "method.strengths=[0.5,4,16]",
        "data.batch_size=8",
        "sweep.batch_size=8",
        "trainer.enable_progress_bar=false",
        f"output_dir={out}",
        f"cache_dir={out / 'cache'}",
        *extra,
    ]


def _compose(overrides: list[str]):  # noqa: ANN202
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_run_writes_consistent_artifacts(tiny_model_dir: Path, task_file: Path, tmp_path: Path) -> None:
    results = run(_compose(_overrides(tiny_model_dir, task_file, tmp_path)))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["methods"].keys() == {"pasf", "ipas_all", "ipas_wrong_only"}
    assert on_disk["splits"] == {"train": 24, "val": 8, "test": 8}
    assert (tmp_path / "config_resolved.yaml").is_file()
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    for name, method in results["methods"].items():
        rows = list(csv.DictReader((tmp_path / "predictions" / f"{name}.csv").open()))
        assert len(rows) == 8
        steered_acc = sum(r["steered_pred"] == r["target"] for r in rows) / 8
        unsteered_acc = sum(r["unsteered_pred"] == r["target"] for r in rows) / 8
        assert method["test_acc"] == pytest.approx(steered_acc)
        assert method["unsteered_test_acc"] == pytest.approx(unsteered_acc)
        assert method["effect"] == pytest.approx(steered_acc - unsteered_acc)
        assert method["flips"]["r2w"] == sum(r["flip"] == "R2W" for r in rows)
        assert method["flips"]["w2r"] == sum(r["flip"] == "W2R" for r in rows)
        steered_letters = {letter: sum(r["steered_pred"] == letter for r in rows) for letter in "ABC"}
        assert method["predicted_letters"]["steered"] == {k: v for k, v in steered_letters.items() if v}
        assert sum(method["predicted_letters"]["unsteered"].values()) == 8
        assert method["letter_bias"]["net_gain"] == method["flips"]["w2r"] - method["flips"]["r2w"]
        grid = torch.tensor(method["grid"]["val_acc"])
        assert grid.shape == (4, 3)
        assert method["val_acc"] == pytest.approx(float(grid.max()), abs=1e-6)
        vector = SteeringVector.load(tmp_path / method["vector_file"], expected_hidden_size=32)
        assert (vector.layer, vector.strength, vector.method) == (method["layer"], method["strength"], name)
        assert (tmp_path / "heatmaps" / f"{name}.png").stat().st_size > 1000
    assert "| pasf " in (tmp_path / "summary.md").read_text()


def test_cached_and_naive_runs_agree(tiny_model_dir: Path, task_file: Path, tmp_path: Path) -> None:
    cached = run(_compose(_overrides(tiny_model_dir, task_file, tmp_path / "cached")))
    naive = run(_compose(_overrides(tiny_model_dir, task_file, tmp_path / "naive", "sweep.engine=naive")))
    for name in cached["methods"]:
        for key in ("layer", "strength", "val_acc", "test_acc", "unsteered_test_acc", "flips", "grid"):
            assert cached["methods"][name][key] == naive["methods"][name][key], (name, key)
    cached_csv = (tmp_path / "cached" / "predictions" / "ipas_all.csv").read_text()
    assert cached_csv == (tmp_path / "naive" / "predictions" / "ipas_all.csv").read_text()


def test_same_seed_same_results(tiny_model_dir: Path, task_file: Path, tmp_path: Path) -> None:
    first = run(_compose(_overrides(tiny_model_dir, task_file, tmp_path / "a", "seed=5")))
    second = run(_compose(_overrides(tiny_model_dir, task_file, tmp_path / "b", "seed=5")))
    first.pop("timings_s")
    second.pop("timings_s")
    assert first == second


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PAS_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PAS_DATA_ROOT", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={tmp_path / 'run'}", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def _output(result: subprocess.CompletedProcess[str]) -> str:
    # Hydra logs to stdout; its own composition errors go to stderr.
    return result.stdout + result.stderr


def test_cli_unknown_task(tmp_path: Path) -> None:
    result = _cli(["task=no_such_task"], tmp_path)
    assert result.returncode != 0
    assert "Could not find 'task/no_such_task'" in _output(result)
    assert "bbq_sample" in _output(result)  # Hydra lists the available tasks


def test_cli_unknown_model_name(tmp_path: Path) -> None:
    result = _cli(["model=no_such_model"], tmp_path)
    assert result.returncode != 0
    assert "Could not find 'model/no_such_model'" in _output(result)
    assert "smollm2_135m" in _output(result)


def test_cli_missing_model_folder(tmp_path: Path) -> None:
    result = _cli(["model=hf", f"model.load.name_or_path={tmp_path / 'absent-model'}", "task=bbq_sample"], tmp_path)
    assert result.returncode == 1
    assert "absent-model" in _output(result)
    assert "Traceback" not in _output(result)


def test_cli_missing_data_root(tmp_path: Path) -> None:
    result = _cli(["task=bbq_age"], tmp_path)
    assert result.returncode == 1
    assert "PAS_DATA_ROOT" in _output(result)
    assert "Traceback" not in _output(result)


def test_cli_missing_data_file(tmp_path: Path) -> None:
    (tmp_path / "data" / "bbq").mkdir(parents=True)
    result = _cli(["task=bbq_age", f"data_root={tmp_path / 'data'}"], tmp_path)
    assert result.returncode == 1
    assert "Age.jsonl" in _output(result)
    assert "Traceback" not in _output(result)


def test_cli_layer_beyond_depth(tiny_model_dir: Path, task_file: Path, tmp_path: Path) -> None:
    args = _overrides(tiny_model_dir, task_file, tmp_path / "out", "method.layers=[1,9]")
    result = _cli([a for a in args if not a.startswith("output_dir=")], tmp_path)
    assert result.returncode == 1
    assert "layers [9] are out of range: the model has 4 decoder layers" in _output(result)
    assert "Traceback" not in _output(result)


def test_cli_empty_negative_set(tmp_path: Path) -> None:
    model_dir = _save_model(tmp_path / "always-a", zero_final_norm=True)
    task = _write_task(tmp_path / "all-a.jsonl", 20, target=0)
    args = _overrides(model_dir, task, tmp_path / "out", "data.shuffle_choices=false")
    result = _cli([a for a in args if not a.startswith("output_dir=")], tmp_path)
    assert result.returncode == 1
    assert "cannot build pasf (12 positive, 0 negative texts)" in _output(result)
    assert "max_sample_size" in _output(result)
    assert "Traceback" not in _output(result)
