"""Kill runs of train.py with SIGKILL, resume them, and compare with uninterrupted runs; determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_train import _save_model, _write_task

ROOT = Path(__file__).resolve().parents[1]
STRENGTHS = "[0.25,0.5,1,2,3,4,6,8,12,16,24,32]"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("resume")
    return _save_model(base / "model"), _write_task(base / "items.jsonl", 60)


def _command(setup: tuple[Path, Path], run_dir: Path, *extra: str) -> list[str]:
    model_dir, task = setup
    return [
        sys.executable,
        str(ROOT / "train.py"),
        f"hydra.run.dir={run_dir}",
        "model=hf",
        f"model.load.name_or_path={model_dir}",
        "model.load.device=cpu",
        "task=generic",
        f"task.loader.path={task}",
        "method.layers=[0,1,2,3]",
        f"method.strengths={STRENGTHS}",
        "data.batch_size=8",
        "sweep.batch_size=8",
        "sweep.configs_per_pass=1",
        "trainer.enable_progress_bar=false",
        "logger=none",
        *extra,
    ]


def _env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "PAS_CACHE_DIR": str(tmp / "cache")}
    env.pop("PAS_DATA_ROOT", None)
    return env


def _run(command: list[str], tmp: Path) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=_env(tmp), cwd=tmp, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _kill_when(command: list[str], tmp: Path, ready: Callable[[], bool]) -> None:
    """Start a run and SIGKILL it as soon as ``ready()`` holds."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(tmp), cwd=tmp, start_new_session=True
    )
    deadline = time.monotonic() + 600
    try:
        while not ready():
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def _results_without_timings(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    results.pop("timings_s")
    return results


def _sweep_entries(run_dir: Path) -> int:
    path = run_dir / "state" / "pas" / "sweep.json"
    try:
        return len(json.loads(path.read_text()))
    except (OSError, ValueError):
        return 0


@pytest.fixture(scope="module")
def reference(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    _run(_command(setup, tmp / "run"), tmp)
    return tmp / "run"


@pytest.mark.slow
def test_kill_in_sweep_then_resume(setup: tuple[Path, Path], reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    total = 3 * 4 * 12  # variants x layers x strengths
    _kill_when(_command(setup, run_dir), tmp_path, lambda: _sweep_entries(run_dir) >= 20)
    finished = _sweep_entries(run_dir)
    assert 20 <= finished < total, "the kill must land inside the sweep"
    assert not (run_dir / "results.json").exists()
    assert (run_dir / "state" / "pas" / "fit.safetensors").is_file()

    _run(_command(setup, run_dir, "resume=true"), tmp_path)
    log = (run_dir / "train.log").read_text()
    assert f"{finished} sweep configurations already finished" in log
    assert "reusing the fitted vectors" in log
    assert _results_without_timings(run_dir) == _results_without_timings(reference)
    for name in ("pasf", "ipas_all", "ipas_wrong_only"):
        vector = f"vectors/{name}.safetensors"
        assert (run_dir / vector).read_bytes() == (reference / vector).read_bytes(), name


def _sft_epoch(run_dir: Path) -> int:
    path = run_dir / "state" / "epochs" / "sft" / "progress.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_kill_in_sft_then_resume(setup: tuple[Path, Path], tmp_path: Path) -> None:
    sft = ("method=sft_pas", "method.run.epochs=4", "method.run.rank=2", "method.run.lr=5e-3", "method.strengths=[1,4]")
    _run(_command(setup, tmp_path / "reference", *sft), tmp_path)

    run_dir = tmp_path / "run"
    _kill_when(_command(setup, run_dir, *sft), tmp_path, lambda: _sft_epoch(run_dir) >= 0)
    assert 0 <= _sft_epoch(run_dir) < 3, "the kill must land inside the fine-tuning"
    assert not (run_dir / "results.json").exists()

    _run(_command(setup, run_dir, "resume=true", *sft), tmp_path)
    assert "Resuming sft after epoch" in (run_dir / "train.log").read_text()
    resumed = _results_without_timings(run_dir)
    assert resumed == _results_without_timings(tmp_path / "reference")
    assert resumed["stages"]["sft+pas"]["methods"].keys() == {"pasf", "ipas_all", "ipas_wrong_only"}


@pytest.mark.slow
def test_resume_with_other_config_is_rejected(setup: tuple[Path, Path], reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _run(_command(setup, run_dir), tmp_path)
    command = _command(setup, run_dir, "resume=true", "seed=7")
    result = subprocess.run(command, capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=600)
    assert result.returncode == 1
    assert "seed: 0 -> 7" in result.stdout + result.stderr
    assert "resume=false" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_two_runs_are_byte_identical(setup: tuple[Path, Path], reference: Path, tmp_path: Path) -> None:
    _run(_command(setup, tmp_path / "again"), tmp_path)
    first = json.loads((reference / "results.json").read_text())
    second = json.loads((tmp_path / "again" / "results.json").read_text())
    first.pop("timings_s")
    second.pop("timings_s")
    # Byte-identical once the timings are removed: same keys, order, float formatting.
    assert json.dumps(first, indent=2, sort_keys=True) == json.dumps(second, indent=2, sort_keys=True)
    first_text = (reference / "results.json").read_text()
    second_text = (tmp_path / "again" / "results.json").read_text()
    assert _without_timings_text(first_text) == _without_timings_text(second_text)
    for name in ("pasf", "ipas_all", "ipas_wrong_only"):
        for suffix in (".safetensors", ".json"):
            vector = f"vectors/{name}{suffix}"
            assert (reference / vector).read_bytes() == (tmp_path / "again" / vector).read_bytes(), vector
        csv = f"predictions/{name}.csv"
        assert (reference / csv).read_bytes() == (tmp_path / "again" / csv).read_bytes(), csv


def _without_timings_text(text: str) -> str:
    # Drop the "timings_s" block from the file text itself, so the rest is compared byte for byte.
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('  "timings_s"'))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("  }"))
    return "\n".join(lines[:start] + lines[end + 1 :])
