"""W&B tracking in offline mode: config, metrics, images, table, vector artifact, and failed runs."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pas.pipeline import run
from pas.tracking import COMPARISON_COLUMNS, artifact_name
from tests.test_train import ROOT, _compose, _overrides, _save_model, _write_task
from tests.wandb_records import history_rows, merged_config, merged_summary, of_type, read_records

VARIANTS = ("pasf", "ipas_all", "ipas_wrong_only")


def _wandb_env(tmp_path: Path) -> dict[str, str]:
    """Environment that keeps W&B offline, quiet and inside ``tmp_path``."""
    home = tmp_path / "wandb-home"
    return {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(home / "dir"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_DISABLE_GIT": "true",
    }


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    env = _wandb_env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return Path(env["WANDB_DATA_DIR"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tracking")
    return _save_model(folder / "model"), _write_task(folder / "items.jsonl", 40)


def _run_folder(out: Path) -> Path:
    folders = sorted((out / "wandb").glob("offline-run-*"))
    assert len(folders) == 1, folders
    return folders[0]


def _wandb_file(out: Path) -> Path:
    files = list(_run_folder(out).glob("run-*.wandb"))
    assert len(files) == 1, files
    return files[0]


def _finished_records(out: Path, timeout_s: float = 60.0) -> list:
    """Read the run's records once W&B has written its exit record.

    wandb-core writes the run file in a separate process. NOTE: once, the summary records were
    missing when the file was read right after ``run.finish()``. A late flush is the assumed cause
    (not confirmed), so the file is polled until the exit record is there.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_records(_wandb_file(out))
        if of_type(records, "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def _csv_metrics(path: Path) -> dict[str, list[float]]:
    """Return each metric's logged values in order, from Lightning's metrics.csv."""
    values: dict[str, list[float]] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key != "step" and value != "":
                    values.setdefault(key, []).append(float(value))
    return values


def _wandb_metrics(rows: list[dict]) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(("_", "heatmaps/", "results/")) or key == "trainer/global_step":
                continue
            values.setdefault(key, []).append(float(value))
    return values


def test_offline_run_folder_contents(setup: tuple[Path, Path], tmp_path: Path, offline_wandb: Path) -> None:
    model_dir, task = setup
    csv_run = run(_compose(_overrides(model_dir, task, tmp_path / "csv")))
    out = tmp_path / "wandb-run"
    results = run(_compose(_overrides(model_dir, task, out, "logger=wandb", "logger.group=study-a")))
    records = _finished_records(out)

    # The run itself, and the resolved config.
    (started,) = of_type(records, "run")
    assert started.display_name == "generic-pas-seed0"
    assert started.project == "pas"
    assert started.run_group == "study-a"
    config = merged_config(records)
    assert config["task"]["name"] == "generic"
    assert config["method"]["strengths"] == [0.5, 4, 16]
    assert config["method"]["layers"] == [0, 1, 2, 3]
    assert config["seed"] == 0
    assert config["output_dir"] == str(out)

    # Every metric the CSV logger receives, with the same values in the same order.
    csv_metrics = _csv_metrics(tmp_path / "csv" / "csv" / "metrics.csv")
    wandb_metrics = _wandb_metrics(history_rows(records))
    assert "train/unsteered_acc" in csv_metrics
    assert "sweep/pas/ipas_all/val_acc" in csv_metrics
    assert wandb_metrics.keys() == csv_metrics.keys()
    for key, expected in csv_metrics.items():
        assert wandb_metrics[key] == pytest.approx(expected), key
    # Deterministic runs: the CSV run and the W&B run select the same configurations.
    assert results["methods"] == csv_run["methods"]

    # Heatmaps as images, byte for byte the run's PNG files.
    images = _run_folder(out) / "files" / "media" / "images" / "heatmaps"
    for variant in VARIANTS:
        (image,) = images.glob(f"{variant}_*.png")
        assert image.read_bytes() == (out / "heatmaps" / f"{variant}.png").read_bytes()

    # The comparison rows as a table, and each row's test accuracy in the summary.
    (table_file,) = (_run_folder(out) / "files" / "media" / "table" / "results").glob("comparison_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == list(COMPARISON_COLUMNS)
    assert [row[0] for row in table["data"]] == [row["name"] for row in results["comparison"]]
    for row, expected in zip(table["data"], results["comparison"]):
        assert row[4] == pytest.approx(expected["test_acc"])
        assert row[7:] == [expected["flips"]["r2w"], expected["flips"]["w2r"]]
    summary = merged_summary(records)
    for variant in VARIANTS:
        assert summary[f"test/pas/{variant}/acc"] == pytest.approx(results["methods"][variant]["test_acc"])
        assert summary[f"test/pas/{variant}/effect"] == pytest.approx(results["methods"][variant]["effect"])

    # The vectors as one artifact. W&B's staged copies match the files and their MD5 digests.
    (artifact,) = [a for a in of_type(records, "artifact") if a.type == "steering-vectors"]
    assert artifact.name == "vectors-generic-pas-model-seed0"
    assert json.loads(artifact.metadata)["task"] == "generic"
    on_disk = sorted(path.name for path in (out / "vectors").iterdir())
    assert on_disk == sorted(f"{v}.{ext}" for v in VARIANTS for ext in ("safetensors", "json"))
    entries = {entry.path: entry for entry in artifact.manifest.contents}
    assert sorted(entries) == on_disk
    for name, entry in entries.items():
        data = (out / "vectors" / name).read_bytes()
        assert entry.digest == base64.b64encode(hashlib.md5(data).digest()).decode()
        assert Path(entry.local_path).read_bytes() == data
        assert Path(entry.local_path).is_relative_to(offline_wandb)

    # The run was finished as a success.
    (exit_record,) = of_type(records, "exit")
    assert exit_record.exit_code == 0


def test_failed_run_finishes_wandb_run(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, task = setup
    args = _overrides(model_dir, task, tmp_path / "out", "logger=wandb", "method.layers=[1,9]")
    args = [a for a in args if not a.startswith("output_dir=")]
    env = {**os.environ, **_wandb_env(tmp_path), "PAS_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("WANDB_API_KEY", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={tmp_path / 'run'}", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "layers [9] are out of range" in output
    records = _finished_records(tmp_path / "run")
    assert merged_config(records)["method"]["layers"] == [1, 9]
    (exit_record,) = of_type(records, "exit")
    assert exit_record.exit_code == 1
    failure = json.loads((tmp_path / "run" / "results.json").read_text())
    assert failure["status"] == "failed"
    assert failure["error_type"] == "GridError"


def test_artifact_name_allowed_characters() -> None:
    name = artifact_name({"task": "bbq_age", "method": "sft_pas", "model": "HuggingFaceTB/SmolLM2 135M+x", "seed": 3})
    assert name == "vectors-bbq_age-sft_pas-SmolLM2_135M_x-seed3"


def test_multirun_one_wandb_run_per_job(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, task = setup
    args = _overrides(model_dir, task, tmp_path / "out", "logger=wandb", "method.layers=[1,2]", "seed=1,2")
    args = [a for a in args if not a.startswith("output_dir=")]
    env = {**os.environ, **_wandb_env(tmp_path), "PAS_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("WANDB_API_KEY", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_ids = set()
    for job, seed in (("0", 1), ("1", 2)):
        records = _finished_records(tmp_path / "sweep" / job)
        (started,) = of_type(records, "run")
        assert started.display_name == f"generic-pas-seed{seed}"
        assert merged_config(records)["seed"] == seed
        (exit_record,) = of_type(records, "exit")
        assert exit_record.exit_code == 0
        run_ids.add(started.run_id)
    assert len(run_ids) == 2
