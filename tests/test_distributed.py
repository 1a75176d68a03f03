"""DDP on CPU (gloo, 2 processes) against one process, sharding helpers, and bf16-mixed runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pas.distributed import ShardSampler, interleave, is_global_zero
from pas.pipeline import run
from pas.steering.module import PASFitModule
from tests.helpers import tiny_llama, tiny_tokenizer
from tests.test_train import ROOT, _compose, _overrides, _save_model, _write_task


def test_shards_cover_every_item_once() -> None:
    for size in (1, 7, 8, 27):
        for world in (1, 2, 3):
            shards = [list(range(rank, size, world)) for rank in range(world)]
            assert sorted(i for shard in shards for i in shard) == list(range(size))
            assert interleave(shards) == list(range(size))


def test_sampler_outside_process_group() -> None:
    assert list(ShardSampler(5)) == [0, 1, 2, 3, 4]
    assert len(ShardSampler(5)) == 5


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),
        ({"LOCAL_RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"RANK": "3", "LOCAL_RANK": "0"}, False),
        ({"SLURM_PROCID": "0"}, True),
        ({"SLURM_PROCID": "2"}, False),
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
    ],
)
def test_global_zero_from_environment(monkeypatch: pytest.MonkeyPatch, env: dict, expected: bool) -> None:
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert is_global_zero() is expected


def test_accumulators_are_not_buffers() -> None:
    # DDP with broadcast_buffers copies rank 0's buffers to every process at each forward call,
    # which would erase the other shards' sums.
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    from pas.data.prompts import PromptBuilder, PromptFormat

    module = PASFitModule(model, PromptBuilder(PromptFormat(), tokenizer), [0], "residual", ["pasf"], [[5]], 4)
    buffers = {name for name, _ in module.named_buffers()}
    assert buffers == {"vectors"}
    ddp = _compose(["trainer=ddp"]).trainer.strategy
    assert ddp.broadcast_buffers is False


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run the same tiny task in one process and in two DDP processes; return both run folders."""
    base = tmp_path_factory.mktemp("ddp")
    model = _save_model(base / "model")
    # 45 items: a 27-item train split, which 2 processes cannot share evenly.
    task = _write_task(base / "items.jsonl", 45)
    common = [
        sys.executable,
        "train.py",
        "model=hf",
        f"model.load.name_or_path={model}",
        "model.load.device=cpu",
        "task=generic",
        f"task.loader.path={task}",
        # PAS sums and the PCA and probe per-text activations are both reduced across processes.
        "method=estimators",
        "method.layers=[0,1,2,3]",
        "method.strengths=[0.5,4,16]",
        "data.batch_size=4",
        "trainer.enable_progress_bar=false",
        f"cache_dir={base / 'cache'}",
    ]
    runs = {}
    for name, extra in (("single", []), ("two", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"])):
        out = base / name
        result = subprocess.run(
            [*common, *extra, f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = out
    return runs["single"], runs["two"]


def test_ddp_matches_one_process(ddp_runs: tuple[Path, Path]) -> None:
    single, two = ddp_runs
    a = json.loads((single / "results.json").read_text())
    b = json.loads((two / "results.json").read_text())
    assert a["splits"]["train"] % 2 == 1
    a.pop("timings_s")
    b.pop("timings_s")
    # Same counts (no padded duplicates), same grids, same selections and test predictions.
    assert a == b
    for variant in a["methods"]:
        x = load_file(single / "vectors" / f"{variant}.safetensors")["vector"]
        y = load_file(two / "vectors" / f"{variant}.safetensors")["vector"]
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6)
    assert (single / "predictions" / "pasf.csv").read_text() == (two / "predictions" / "pasf.csv").read_text()


def test_ddp_writes_only_from_rank_zero(ddp_runs: tuple[Path, Path]) -> None:
    _, two = ddp_runs
    log = (two / "train.log").read_text() + (two / "train_ddp_process_1.log").read_text()
    assert f"Artifacts written to {two}" in log
    assert log.count("Artifacts written to") == 1


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("bf16")
    return _save_model(base / "model"), _write_task(base / "items.jsonl", 40)


@pytest.mark.parametrize("method", ["pas", "sft_pas"])
def test_bf16_mixed_runs(tiny_task: tuple[Path, Path], tmp_path: Path, method: str) -> None:
    model, task = tiny_task
    extra = [f"method={method}"] + (["method.run.epochs=1"] if method == "sft_pas" else [])
    full = run(_compose(_overrides(model, task, tmp_path / "fp32", *extra)))
    mixed = run(_compose(_overrides(model, task, tmp_path / "bf16", *extra, "trainer.precision=bf16-mixed")))
    assert [row["name"] for row in mixed["comparison"]] == [row["name"] for row in full["comparison"]]
    for row in mixed["comparison"]:
        assert 0.0 <= row["test_acc"] <= 1.0
    for variant in full["methods"]:
        x = load_file(tmp_path / "fp32" / "vectors" / f"{variant}.safetensors")["vector"]
        y = load_file(tmp_path / "bf16" / "vectors" / f"{variant}.safetensors")["vector"]
        assert torch.isfinite(y).all()
        # The forward passes of fitting run in bfloat16, so the vectors agree only approximately.
        assert torch.nn.functional.cosine_similarity(x, y, dim=0) > 0.95
