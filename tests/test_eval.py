"""eval.py: transfer evaluation of saved vectors, adapters, generation mode and bad input."""

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
from peft import LoraConfig, get_peft_model

from pas.config import ConfigError
from pas.evaluate import run_eval
from pas.models.layers import LayerLookupError
from pas.pipeline import run
from pas.steering.generation import Steering, generate_greedy
from pas.steering.vector import SteeringVector, VectorFileError
from tests.helpers import tiny_llama, tiny_tokenizer
from tests.test_train import _compose, _overrides, _save_model, _write_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_task(tmp_path_factory.mktemp("task") / "items.jsonl", 40)


@pytest.fixture(scope="module")
def trained(model_dir: Path, task_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Run train.py's pipeline once and return its output folder and results."""
    out = tmp_path_factory.mktemp("train-run")
    results = run(_compose(_overrides(model_dir, task_file, out, "method.variants=[ipas_all]")))
    return out, results


def _eval_cfg(model_dir: Path, task: Path, out: Path, *extra: str):  # noqa: ANN202
    overrides = [
        "model=hf",
        f"model.load.name_or_path={model_dir}",
        "model.load.device=cpu",
        "task=generic",
        f"task.loader.path={task}",
        "sweep.batch_size=8",
        f"output_dir={out}",
        f"cache_dir={out / 'cache'}",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


def _vector_path(trained: tuple[Path, dict]) -> Path:
    out, results = trained
    return out / results["methods"]["ipas_all"]["vector_file"]


def test_same_task_reproduces_train_results(
    model_dir: Path, task_file: Path, trained: tuple[Path, dict], tmp_path: Path
) -> None:
    out, results = trained
    evaluated = run_eval(_eval_cfg(model_dir, task_file, tmp_path, f"vector={_vector_path(trained)}"))
    record = results["methods"]["ipas_all"]
    assert evaluated["splits"] == results["splits"]
    assert evaluated["unsteered_acc"] == pytest.approx(record["unsteered_test_acc"])
    assert evaluated["steered_acc"] == pytest.approx(record["test_acc"])
    assert evaluated["flips"] == record["flips"]
    assert evaluated["predicted_letters"] == record["predicted_letters"]
    assert (evaluated["layer"], evaluated["strength"]) == (record["layer"], record["strength"])
    train_csv = (out / "predictions" / "ipas_all.csv").read_text()
    assert (tmp_path / "predictions.csv").read_text() == train_csv
    assert json.loads((tmp_path / "eval_results.json").read_text()) == evaluated
    assert "| generic " in (tmp_path / "summary.md").read_text()


def test_transfer_to_other_task_with_overrides(model_dir: Path, trained: tuple[Path, dict], tmp_path: Path) -> None:
    other = _write_task(tmp_path / "other.jsonl", 30, n_choices=4)
    vector = _vector_path(trained)
    base = run_eval(_eval_cfg(model_dir, other, tmp_path / "a", f"vector={vector}", "strength=0"))
    assert base["steered_acc"] == base["unsteered_acc"]
    assert base["flips"] == {"r2w": 0, "w2r": 0}
    moved = run_eval(_eval_cfg(model_dir, other, tmp_path / "b", f"vector={vector}", "layer=3", "strength=64"))
    assert (moved["layer"], moved["strength"]) == (3, 64.0)
    assert moved["unsteered_acc"] == base["unsteered_acc"]
    rows = list(csv.DictReader((tmp_path / "b" / "predictions.csv").open()))
    assert len(rows) == moved["splits"]["test"]
    assert sum(r["steered_pred"] != r["unsteered_pred"] for r in rows) > 0
    assert moved["flips"]["r2w"] == sum(r["flip"] == "R2W" for r in rows)
    assert moved["flips"]["w2r"] == sum(r["flip"] == "W2R" for r in rows)
    assert sum(moved["correct_letters"].values()) == len(rows)


def test_rejects_vector_of_other_model(model_dir: Path, trained: tuple[Path, dict], tmp_path: Path) -> None:
    task = _write_task(tmp_path / "items.jsonl", 20)
    other_name = SteeringVector(torch.ones(32), layer=1, metadata={"model_name": "someone/else"})
    path = other_name.save(tmp_path / "other_model")
    with pytest.raises(VectorFileError, match="fitted on model 'someone/else'"):
        run_eval(_eval_cfg(model_dir, task, tmp_path / "a", f"vector={path}"))
    assert run_eval(_eval_cfg(model_dir, task, tmp_path / "b", f"vector={path}", "check_model=false"))["status"] == "ok"
    wrong_size = SteeringVector(torch.ones(16), layer=1).save(tmp_path / "small")
    with pytest.raises(VectorFileError, match="hidden size 16 but the model has 32"):
        run_eval(_eval_cfg(model_dir, task, tmp_path / "c", f"vector={wrong_size}"))
    with pytest.raises(LayerLookupError, match="layer 9 is out of range"):
        run_eval(_eval_cfg(model_dir, task, tmp_path / "d", f"vector={path}", "layer=9", "check_model=false"))


def test_config_problems_listed_together(model_dir: Path, tmp_path: Path) -> None:
    task = _write_task(tmp_path / "items.jsonl", 20)
    cfg = _eval_cfg(model_dir, task, tmp_path, "mode=score", "split=dev", "strength=inf", "generate.max_new_tokens=0")
    with pytest.raises(ConfigError) as err:
        run_eval(cfg)
    for text in ("mode must be one of", "vector is not set", "split must be one of", "strength must be finite"):
        assert text in str(err.value)
    assert "generate.max_new_tokens" in str(err.value)


def test_adapter_is_applied(model_dir: Path, trained: tuple[Path, dict], tmp_path: Path) -> None:
    torch.manual_seed(0)
    lora = get_peft_model(
        tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    )
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_" in name:
                param.mul_(20)  # large enough to change predictions
    lora.save_pretrained(tmp_path / "adapter")
    task = _write_task(tmp_path / "items.jsonl", 40)
    vector = _vector_path(trained)
    plain = run_eval(_eval_cfg(model_dir, task, tmp_path / "a", f"vector={vector}"))
    adapted = run_eval(
        _eval_cfg(model_dir, task, tmp_path / "b", f"vector={vector}", f"adapter={tmp_path / 'adapter'}")
    )
    assert adapted["adapter"] == str(tmp_path / "adapter")
    assert adapted["predicted_letters"]["unsteered"] != plain["predicted_letters"]["unsteered"]
    with pytest.raises(ConfigError, match="adapter_config.json not found"):
        run_eval(_eval_cfg(model_dir, task, tmp_path / "c", f"vector={vector}", f"adapter={tmp_path}"))


def test_generate_mode_writes_both_completions(model_dir: Path, trained: tuple[Path, dict], tmp_path: Path) -> None:
    task = _write_task(tmp_path / "items.jsonl", 20)
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text('{"prompt": "the lazy dog"}\n{"prompt": "Question: which answer"}\n')
    vector = _vector_path(trained)
    cfg = _eval_cfg(
        model_dir,
        task,
        tmp_path,
        "mode=generate",
        f"vector={vector}",
        "strength=16",
        "generate.prompts=[the quick brown fox]",
        f"generate.prompts_file={prompts_file}",
        "generate.max_new_tokens=5",
        "generate.batch_size=2",
    )
    results = run_eval(cfg)
    records = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["the quick brown fox", "the lazy dog", "Question: which answer"]
    assert results["generations"] == records
    # Independent of eval.py: the same model, tokens and vector through generate_greedy one prompt at a time.
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    loaded = SteeringVector.load(vector)
    steering = Steering(loaded.vector, loaded.layer, loaded.site, 16.0)
    for record in records:
        ids = [tokenizer(record["prompt"])["input_ids"]]
        assert record["unsteered_tokens"] == generate_greedy(model, ids, 5, [2], batch_size=1)[0]
        assert record["steered_tokens"] == generate_greedy(model, ids, 5, [2], steering, batch_size=1)[0]
    assert any(r["steered_tokens"] != r["unsteered_tokens"] for r in records)
    assert "Steered (layer" in (tmp_path / "summary.md").read_text()


def test_generate_without_prompts_is_an_error(model_dir: Path, trained: tuple[Path, dict], tmp_path: Path) -> None:
    task = _write_task(tmp_path / "items.jsonl", 20)
    cfg = _eval_cfg(model_dir, task, tmp_path, "mode=generate", f"vector={_vector_path(trained)}")
    with pytest.raises(ConfigError, match="no prompts to generate from"):
        run_eval(cfg)


def test_cli_reports_missing_vector_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PAS_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), f"hydra.run.dir={tmp_path / 'run'}", f"vector={tmp_path / 'none'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "vector file not found" in output
    assert "Traceback" not in output
