"""End-to-end runs of the comparison methods (SFT+PAS, ICL+PAS, trained vector) on a tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pas.pipeline import run
from pas.steering.vector import SteeringVector
from tests.test_train import _compose, _overrides, _save_model, _write_task


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("methods")
    return _save_model(folder / "model"), _write_task(folder / "items.jsonl", 40)


def _rows(results: dict) -> dict[str, dict]:
    return {row["name"]: row for row in results["comparison"]}


def test_sft_pas_side_by_side(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, task = setup
    extra = ("method=sft_pas", "method.run.epochs=2", "method.run.rank=2", "method.run.lr=5e-3")
    results = run(_compose(_overrides(model_dir, task, tmp_path, *extra)))
    rows = _rows(results)
    assert {"unsteered", "sft", "pas/pasf", "sft+pas/pasf", "sft+pas/ipas_all"} <= rows.keys()
    assert rows["unsteered"]["test_acc"] == pytest.approx(results["unsteered"]["test_acc"])
    combined = results["stages"]["sft+pas"]["methods"]["pasf"]
    assert rows["sft"]["test_acc"] == pytest.approx(combined["unsteered_test_acc"])
    assert rows["sft+pas/pasf"]["test_acc"] == pytest.approx(combined["test_acc"])
    assert rows["sft+pas/pasf"]["effect_vs_baseline"] == pytest.approx(combined["effect"])
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "predictions" / "sft_pas-pasf.csv").is_file()
    assert "Side by side" in (tmp_path / "summary.md").read_text()


def test_icl_pas_side_by_side(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, task = setup
    results = run(_compose(_overrides(model_dir, task, tmp_path, "method=icl_pas", "method.run.k=2")))
    rows = _rows(results)
    assert {"unsteered", "icl", "pas/ipas_all", "icl+pas/ipas_all"} <= rows.keys()
    assert len(results["icl"]["exemplars"]) == 2
    exemplars = set(json.loads((tmp_path / "results.json").read_text())["icl"]["exemplars"])
    test_ids = {row["item_id"] for row in csv.DictReader((tmp_path / "predictions" / "pasf.csv").open())}
    assert not exemplars & test_ids
    assert 1.0 <= results["icl"]["mean_exemplars_per_prompt"] <= 2.0
    combined = results["stages"]["icl+pas"]["methods"]["pasf"]
    assert rows["icl"]["test_acc"] == pytest.approx(combined["unsteered_test_acc"])


def test_pas_trained_beside_variants(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, task = setup
    extra = ("method=pas_trained", "method.run.epochs=2", "method.run.l2=0.001")
    results = run(_compose(_overrides(model_dir, task, tmp_path, *extra)))
    rows = _rows(results)
    assert {"unsteered", "pas/pasf", "pas_trained"} <= rows.keys()
    trained = results["trained"]
    best = max(results["methods"].values(), key=lambda m: (m["val_acc"], -abs(m["strength"])))
    assert trained["layer"] == best["layer"]
    vector = SteeringVector.load(tmp_path / trained["vector_file"], expected_hidden_size=32)
    assert vector.method == "pas_trained"
    assert float(vector.vector.norm()) == pytest.approx(trained["vector_norm"], rel=1e-5)
