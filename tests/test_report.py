"""The cross-seed report: a real two-seed multirun on a tiny model, checked against a hand computation."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from pas.report.__main__ import main as report_main
from pas.report.sweep import ReportError, collect, write_report
from tests.test_train import ROOT, _save_model, _write_task


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("report")
    model = _save_model(base / "model")
    task = _write_task(base / "items.jsonl", 40)
    sweep = base / "sweep"
    args = [
        sys.executable,
        "train.py",
        "-m",
        "seed=1,2",
        "model=hf",
        f"model.load.name_or_path={model}",
        "model.load.device=cpu",
        "task=generic",
        f"task.loader.path={task}",
        "method.layers=[0,2]",
        "method.strengths=[1,8]",
        "trainer.enable_progress_bar=false",
        f"cache_dir={base / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


def _by_seed(sweep: Path) -> dict[int, dict]:
    runs = {}
    for path in sorted(sweep.glob("*/results.json")):
        results = json.loads(path.read_text())
        runs[results["seed"]] = results
    return runs


def test_multirun_one_folder_per_seed(sweep_dir: Path) -> None:
    runs = _by_seed(sweep_dir)
    assert sorted(runs) == [1, 2]
    assert {r["status"] for r in runs.values()} == {"ok"}
    assert runs[1]["splits"] == runs[2]["splits"]
    found = collect(sweep_dir)
    assert len(found.runs) == 2
    assert found.problems == []
    assert found.expected == 2


def test_report_equals_hand_computation(sweep_dir: Path, tmp_path: Path) -> None:
    report = write_report(sweep_dir, tmp_path / "out")
    runs = _by_seed(sweep_dir)
    names = [row["name"] for row in runs[1]["comparison"] if row["name"] != "unsteered"]
    assert names == ["pas/pasf", "pas/ipas_all", "pas/ipas_wrong_only"]
    rows = {row["result"]: row for row in report["task_rows"]}
    assert set(rows) == set(names)
    for name in names:
        steered = [next(r["test_acc"] for r in runs[s]["comparison"] if r["name"] == name) for s in (1, 2)]
        unsteered = [runs[s]["unsteered"]["test_acc"] for s in (1, 2)]
        effects = [a - b for a, b in zip(steered, unsteered)]
        row = rows[name]
        assert row["n"] == 2
        assert row["steered_test_acc"] == pytest.approx(statistics.fmean(steered))
        assert row["unsteered_test_acc"] == pytest.approx(statistics.fmean(unsteered))
        assert row["effect"] == pytest.approx(statistics.fmean(effects))
        assert row["effect_se"] == pytest.approx(statistics.stdev(effects) / math.sqrt(2))
        expected_p = stats.ttest_rel(steered, unsteered, alternative="greater").pvalue
        assert (math.isnan(row["p_value"]) and math.isnan(expected_p)) or row["p_value"] == pytest.approx(expected_p)
        assert row["wins"] == sum(e > 0 for e in effects)
        assert row["losses"] == sum(e < 0 for e in effects)
        assert row["wins"] + row["ties"] + row["losses"] == 2
        variant = name.split("/")[1]
        flagged = sum(runs[s]["methods"][variant]["letter_bias"]["flagged"] for s in (1, 2))
        assert row["letter_bias_runs"] == flagged

    # The only group is the generic task's, so the group rows equal the task rows.
    group = {row["result"]: row for row in report["group_rows"]}
    for name in names:
        assert group[name]["effect"] == pytest.approx(rows[name]["effect"])

    with (tmp_path / "out" / "report.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 2 * len(names)
    assert float(table[0]["effect"]) == pytest.approx(rows[table[0]["result"]]["effect"])
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Runs found: 2 finished of 2 expected" in markdown
    assert (tmp_path / "out" / "figures" / "effect_per_task.png").stat().st_size > 1000
    heatmaps = sorted(p.name for p in (tmp_path / "out" / "figures").glob("heatmap_*.png"))
    assert len(heatmaps) == 3


def test_mean_heatmap_averages_seeds(sweep_dir: Path) -> None:
    from pas.report.sweep import mean_grids

    runs = collect(sweep_dir).runs
    grids = mean_grids(runs)
    key = (runs[0].results["model"], runs[0].results["task"], "pas/pasf")
    grid_1 = runs[0].results["methods"]["pasf"]["grid"]["val_acc"]
    grid_2 = runs[1].results["methods"]["pasf"]["grid"]["val_acc"]
    for i, row in enumerate(grids[key]["val_acc"]):
        for j, value in enumerate(row):
            assert value == pytest.approx((grid_1[i][j] + grid_2[i][j]) / 2)


def _copy(sweep: Path, tmp_path: Path) -> Path:
    target = tmp_path / "sweep"
    shutil.copytree(sweep, target, ignore=shutil.ignore_patterns("report"))
    return target


def test_report_names_failed_runs(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    sweep = _copy(sweep_dir, tmp_path)
    jobs = sorted(p.parent for p in sweep.glob("*/results.json"))
    failed = {"status": "failed", "task": "generic", "method": "pas", "seed": 2, "error": "boom", "error_type": "X"}
    (jobs[1] / "results.json").write_text(json.dumps(failed))
    code = report_main([str(sweep), "--out", str(tmp_path / "a")])
    out = capsys.readouterr().out
    assert code == 1
    assert "failed: 1 (generic seed 2: X: boom)" in out
    assert "Runs found: 1 finished of 2 expected" in out

    (jobs[1] / "results.json").unlink()
    shutil.rmtree(jobs[0])
    found = collect(sweep)
    kinds = sorted((p.kind, p.detail) for p in found.problems)
    assert kinds[0][0] == "missing"
    assert "seed=1" in kinds[0][1]
    assert kinds[1][0] == "unfinished"
    assert "seed=2" in kinds[1][1]
    with pytest.raises(ReportError, match="no finished runs"):
        write_report(sweep, tmp_path / "b")


def test_conflicting_duplicates_raise(sweep_dir: Path, tmp_path: Path) -> None:
    sweep = _copy(sweep_dir, tmp_path)
    job = sorted(p.parent for p in sweep.glob("*/results.json"))[0]
    twin = sweep / "twin"
    shutil.copytree(job, twin)
    results = json.loads((twin / "results.json").read_text())
    results["comparison"][1]["test_acc"] += 0.5
    (twin / "results.json").write_text(json.dumps(results))
    with pytest.raises(ReportError, match="one run per task, seed and method"):
        write_report(sweep, tmp_path / "out")


def test_missing_folder_error(tmp_path: Path, capsys) -> None:
    assert report_main([str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
