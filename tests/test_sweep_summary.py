"""Multiruns where a job fails: the other jobs finish, the summary lists the failure, the exit status is 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pas.sweep_summary import collect_jobs, expected_jobs, write_summary
from tests.test_resume import _env
from tests.test_train import _save_model, _write_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("sweep")
    return _save_model(base / "model"), _write_task(base / "items.jsonl", 30)


def _multirun(setup: tuple[Path, Path], sweep_dir: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    model_dir, _ = setup
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        "model=hf",
        f"model.load.name_or_path={model_dir}",
        "model.load.device=cpu",
        "task=generic",
        "method.layers=[1,2]",
        "method.strengths=[1,4]",
        "trainer.enable_progress_bar=false",
        "logger=none",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=_env(tmp), cwd=tmp, timeout=600)


def _job_results(sweep_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/results.json"))]


@pytest.mark.slow
def test_failed_task_does_not_stop_others(setup: tuple[Path, Path], tmp_path: Path) -> None:
    _, task = setup
    absent = tmp_path / "absent.jsonl"
    sweep_dir = tmp_path / "sweep"
    result = _multirun(setup, sweep_dir, tmp_path, f"task.loader.path={absent},{task}", "seed=0,1")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output

    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["counts"] == {"ok": 2, "failed": 2, "missing": 0}
    failed = [job for job in summary["jobs"] if job["status"] == "failed"]
    assert {job["seed"] for job in failed} == {0, 1}
    for job in failed:
        assert job["error_type"] == "DataError"
        assert f"Data file not found: {absent}" in job["error"]
        assert job["task"] == "generic"
        assert job["method"] == "pas"
        assert f"task.loader.path={absent}" in job["overrides"]
    statuses = sorted(r["status"] for r in _job_results(sweep_dir))
    assert statuses == ["failed", "failed", "ok", "ok"]
    markdown = (sweep_dir / "sweep_summary.md").read_text()
    assert "2 ok, 2 failed, 0 missing of 4 jobs." in markdown
    assert "| failed |" in markdown
    assert "DataError: Data file not found" in markdown


@pytest.mark.slow
def test_joblib_unexpected_error_is_recorded(setup: tuple[Path, Path], tmp_path: Path) -> None:
    _, task = setup
    sweep_dir = tmp_path / "sweep"
    loaders = "pas.data.loaders.load_generic,pas.data.loaders.no_such_loader"
    result = _multirun(
        setup,
        sweep_dir,
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"task.loader.path={task}",
        f"task.loader._target_={loaders}",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["counts"] == {"ok": 1, "failed": 1, "missing": 0}
    failed = next(job for job in summary["jobs"] if job["status"] == "failed")
    assert failed["error_type"] == "InstantiationException"
    assert "no_such_loader" in failed["error"]
    ok = next(job for job in summary["jobs"] if job["status"] == "ok")
    assert ok["task"] == "generic"


@pytest.mark.slow
def test_all_ok_sweep_exits_zero(setup: tuple[Path, Path], tmp_path: Path) -> None:
    _, task = setup
    sweep_dir = tmp_path / "sweep"
    result = _multirun(setup, sweep_dir, tmp_path, f"task.loader.path={task}", "seed=3")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["counts"] == {"ok": 1, "failed": 0, "missing": 0}


def _job(folder: Path, overrides: list[str], results: dict | None) -> None:
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results))


def test_summary_lists_missing_jobs(tmp_path: Path) -> None:
    _job(tmp_path / "0", ["seed=1"], {"status": "ok", "task": "t", "method": "pas", "seed": 1})
    _job(tmp_path / "1", ["seed=2"], None)  # killed before it wrote results.json
    expected = [["seed=1"], ["seed=2"], ["seed=3"]]
    summary = write_summary(tmp_path, expected)
    assert summary["counts"] == {"ok": 1, "failed": 0, "missing": 2}
    reasons = [job["error"] for job in summary["jobs"] if job["status"] == "missing"]
    assert reasons == ["the job wrote no results.json (it was killed or is still running)", "the job never started"]
    assert (tmp_path / "sweep_summary.md").read_text().startswith("1 ok, 0 failed, 2 missing of 3 jobs.")


def test_summary_reads_unreadable_result_as_missing(tmp_path: Path) -> None:
    _job(tmp_path / "0", ["seed=1"], None)
    (tmp_path / "0" / "results.json").write_text('{"status": "ok", "tas')
    jobs = collect_jobs(tmp_path, None)
    assert jobs[0]["status"] == "missing"
    assert "cannot be read" in jobs[0]["error"]


def test_expected_jobs_of_basic_sweeper() -> None:
    config = OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
                "overrides": {"task": ["task=a,b", "seed=1,2", "logger=none"]},
            }
        }
    )
    jobs = expected_jobs(config)
    assert jobs is not None
    assert len(jobs) == 4
    assert ["task=a", "seed=1", "logger=none"] in jobs
    other = OmegaConf.create({"hydra": {"sweeper": {"_target_": "hydra_plugins.optuna.OptunaSweeper"}}})
    assert expected_jobs(other) is None
