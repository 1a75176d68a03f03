"""PCA, probe and CAA estimators: planted directions, independent references and the fitting module."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch.utils.data import DataLoader

from pas.config import ConfigError
from pas.data.prompts import PromptBuilder, PromptFormat, render_answer, render_prompt
from pas.evaluation.scoring import letter_token_ids
from pas.pipeline import run
from pas.steering.builders import EmptyContrastError
from pas.steering.estimators import (
    CAAPairsError,
    EstimatorSettings,
    load_caa_pairs,
    mean_difference,
    pca_direction,
    probe_direction,
)
from pas.steering.module import PASFitModule
from pas.steering.vector import SteeringVector
from tests.helpers import make_items, tiny_llama, tiny_tokenizer
from tests.test_train import _compose, _overrides, _save_model, _write_task

HIDDEN = 48
LAYERS = [0, 2]
ROOT = Path(__file__).resolve().parents[1]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def _planted(seed: int, n_pos: int, n_neg: int, shift: float = 3.0, paired: bool = False) -> tuple[torch.Tensor, ...]:
    """Return a random unit direction and activations whose positives are shifted along it, plus noise.

    A common offset and three large-variance nuisance directions make the task harder than noise
    alone. With ``paired`` positive ``i`` and negative ``i`` share one base activation (the same
    question with two answers) and differ by the shift and independent noise.
    """
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(HIDDEN, generator=generator)
    direction /= direction.norm()
    offset = 5 * torch.randn(HIDDEN, generator=generator)
    nuisance = torch.randn(3, HIDDEN, generator=generator)
    nuisance /= nuisance.norm(dim=1, keepdim=True)  # unit directions, standard deviation 1.5 along each

    def sample(n: int) -> torch.Tensor:
        return (
            offset
            + torch.randn(n, HIDDEN, generator=generator)
            + 1.5 * torch.randn(n, 3, generator=generator) @ nuisance
        )

    # Positive shifts vary in size, so the differences are not all equal.
    sizes = shift * (0.5 + torch.rand(n_pos, 1, generator=generator))
    if paired:
        base = sample(n_pos)
        pos = base + sizes * direction + 0.5 * torch.randn(n_pos, HIDDEN, generator=generator)
        return direction, pos, base + 0.5 * torch.randn(n_pos, HIDDEN, generator=generator)
    return direction, sample(n_pos) + sizes * direction, sample(n_neg)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pca_recovers_planted_direction_paired(seed: int) -> None:
    direction, pos, neg = _planted(seed, 60, 60, paired=True)
    found = pca_direction(pos, neg, paired=True)
    assert _cosine(found, direction) > 0.9
    assert float(found.norm()) == pytest.approx(float(mean_difference(pos, neg).norm()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pca_recovers_planted_direction_unpaired(seed: int) -> None:
    direction, pos, neg = _planted(seed, 200, 140)
    found = pca_direction(pos, neg, paired=False)
    assert _cosine(found, direction) > 0.9


def test_pca_sign_follows_mean_difference() -> None:
    direction, pos, neg = _planted(4, 60, 60, paired=True)
    assert _cosine(pca_direction(neg, pos, paired=True), direction) < -0.9
    direction, pos, neg = _planted(4, 200, 140)
    assert _cosine(pca_direction(neg, pos, paired=False), direction) < -0.9


def test_pca_unpaired_equals_all_pairs() -> None:
    # Reference: materialize every positive-negative difference and take its top right-singular vector.
    _, pos, neg = _planted(5, 13, 9)
    diffs = (pos.double()[:, None, :] - neg.double()[None, :, :]).reshape(-1, HIDDEN)  # (P * N, H)
    top = torch.linalg.svd(diffs, full_matrices=False).Vh[0]
    found = pca_direction(pos, neg, paired=False)
    assert abs(_cosine(found, top)) > 1 - 1e-9


def test_pca_paired_equals_difference_svd() -> None:
    _, pos, neg = _planted(6, 11, 11)
    top = np.linalg.svd((pos - neg).double().numpy())[2][0]
    assert abs(_cosine(pca_direction(pos, neg, paired=True), torch.from_numpy(top))) > 1 - 1e-9


def test_pca_paired_rejects_unequal_sides() -> None:
    _, pos, neg = _planted(7, 5, 4)
    with pytest.raises(ValueError, match="as many positives as negatives"):
        pca_direction(pos, neg, paired=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probe_recovers_planted_direction(seed: int) -> None:
    direction, pos, neg = _planted(seed, 240, 160, shift=2.5)
    found = probe_direction(pos, neg)
    assert _cosine(found, direction) > 0.9
    assert float(found.norm()) == pytest.approx(float(mean_difference(pos, neg).norm()))


def test_probe_matches_scipy_fit() -> None:
    # The same objective minimized by scipy's L-BFGS-B from the same start gives the same direction.
    _, pos, neg = _planted(8, 30, 20, shift=1.0)
    l2 = 0.05
    x = torch.cat([pos, neg]).double().numpy()
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    center, scale = x.mean(0), x.std(0)
    z = (x - center) / scale
    weights = np.where(y == 1, 0.5 / len(pos), 0.5 / len(neg))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logit = z @ theta[:-1] + theta[-1]
        sign = np.where(y == 1, -1.0, 1.0)
        value = float(weights @ np.logaddexp(0, sign * logit) + 0.5 * l2 * theta[:-1] @ theta[:-1])
        slope = weights * sign / (1 + np.exp(-sign * logit))
        grad = np.r_[z.T @ slope + l2 * theta[:-1], slope.sum()]
        return value, grad

    theta = minimize(loss, np.zeros(HIDDEN + 1), jac=True, method="L-BFGS-B", options={"gtol": 1e-12}).x
    reference = torch.from_numpy(theta[:-1] / scale)
    assert _cosine(probe_direction(pos, neg, l2=l2), reference) > 0.999


def test_probe_is_deterministic() -> None:
    _, pos, neg = _planted(9, 20, 20)
    assert torch.equal(probe_direction(pos, neg), probe_direction(pos, neg))


def test_caa_pairs_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"positive": " yes", "negative": " no", "prompt": "Q?"}\n\n{"positive": "a", "negative": "b"}\n')
    pairs = load_caa_pairs(path)
    assert [(p.prompt, p.positive, p.negative) for p in pairs] == [("Q?", " yes", " no"), (None, "a", "b")]


def test_caa_pairs_file_lists_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"positive": "a"}\nnot json\n[1]\n{"positive": "a", "negative": "b", "prompt": 3}\n')
    with pytest.raises(CAAPairsError) as err:
        load_caa_pairs(path)
    message = str(err.value)
    for line in ("line 1", "line 2", "line 3", "line 4"):
        assert line in message
    with pytest.raises(CAAPairsError, match="not found"):
        load_caa_pairs(tmp_path / "missing.jsonl")


def test_shipped_example_pairs_load() -> None:
    assert len(load_caa_pairs(ROOT / "examples" / "caa_pairs.jsonl")) >= 8


def _fit(variants: list[str], settings: EstimatorSettings, items: int = 24) -> PASFitModule:
    tokenizer = tiny_tokenizer()
    module = PASFitModule(
        tiny_llama(),
        PromptBuilder(PromptFormat(), tokenizer),
        LAYERS,
        "residual",
        variants,
        letter_token_ids(tokenizer, 3),
        5,
        estimators=settings,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(make_items(items), batch_size=5, collate_fn=list))  # type: ignore[arg-type]
    return module


def _residual(model: torch.nn.Module, text: str) -> torch.Tensor:
    """Read the residual stream at the last token from hidden_states[L + 1], one text at a time."""
    ids = torch.tensor([tiny_tokenizer()(text)["input_ids"]])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    return torch.stack([hidden[layer + 1][0, -1] for layer in LAYERS])  # (L, H)


@pytest.mark.parametrize("contrast", ["ipas_wrong_only", "ipas_all"])
def test_module_fits_estimators_on_contrast_texts(contrast: str) -> None:
    module = _fit(["ipas_all", "pca", "probe"], EstimatorSettings(contrast=contrast))
    model, fmt, items = tiny_llama(), PromptFormat(), make_items(24)
    preds = {record["id"]: record["pred"] for record in module.train_records}
    wrong = [item for item in items if preds[item.id] != item.target]
    right = [item for item in items if preds[item.id] == item.target]
    assert wrong
    assert right
    positive_items = wrong if contrast == "ipas_wrong_only" else right
    pos = torch.stack([_residual(model, render_answer(i, i.target, fmt)) for i in positive_items])
    neg = torch.stack([_residual(model, render_answer(i, preds[i.id], fmt)) for i in wrong])
    table = module.vector_table()
    assert set(table) == {"ipas_all", "pca", "probe"}
    for k in range(len(LAYERS)):
        expected_pca = pca_direction(pos[:, k], neg[:, k], paired=contrast == "ipas_wrong_only")
        expected_probe = probe_direction(pos[:, k], neg[:, k])
        torch.testing.assert_close(table["pca"][k].double(), expected_pca, rtol=1e-3, atol=1e-4)
        assert _cosine(table["probe"][k], expected_probe) > 0.999
    assert module.counts()["pca"] == {"positive": len(pos), "negative": len(neg)}


def test_module_caa_is_mean_pair_difference() -> None:
    pairs = ROOT / "examples" / "caa_pairs.jsonl"
    module = _fit(["caa"], EstimatorSettings(caa_pairs=str(pairs)), items=10)
    model = tiny_llama()
    diffs = []
    for line in pairs.read_text().splitlines():
        record = json.loads(line)
        positive = _residual(model, record["prompt"] + record["positive"])
        diffs.append(positive - _residual(model, record["prompt"] + record["negative"]))
    expected = torch.stack(diffs).double().mean(0)
    torch.testing.assert_close(module.vector_table()["caa"].double(), expected, rtol=1e-4, atol=1e-5)
    assert module.counts()["caa"] == {"positive": len(diffs), "negative": len(diffs)}


def test_module_rejects_empty_contrast() -> None:
    # Every item is relabeled with the model's own answer, so no train item is wrong and the
    # ipas_wrong_only contrast set that pca reads is empty.
    module_items = make_items(6)
    tokenizer = tiny_tokenizer()
    model = tiny_llama()
    fmt = PromptFormat()
    letters = letter_token_ids(tokenizer, 3)
    relabeled = []
    for item in module_items:
        ids = torch.tensor([tokenizer(render_prompt(item, fmt))["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        pred = int(torch.stack([torch.logsumexp(logits[i], 0) for i in letters]).argmax())
        relabeled.append(type(item)(item.id, item.question, item.choices, pred))
    module = PASFitModule(model, PromptBuilder(fmt, tokenizer), LAYERS, "residual", ["pca"], letters, 3)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False)
    with pytest.raises(EmptyContrastError, match="pca on the ipas_wrong_only contrast set \\(0 positive, 0 negative"):
        trainer.fit(module, DataLoader(relabeled, batch_size=3, collate_fn=list))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_task(tmp_path_factory.mktemp("task") / "items.jsonl", 40)


@pytest.mark.parametrize(
    ("method", "names"),
    [
        ("pca", ["pca"]),
        ("probe", ["probe"]),
        ("caa", ["caa"]),
        ("estimators", ["pasf", "ipas_all", "ipas_wrong_only", "pca", "probe"]),
    ],
)
def test_method_config_runs_end_to_end(
    method: str, names: list[str], tiny_model_dir: Path, task_file: Path, tmp_path: Path
) -> None:
    pairs = f"method.estimators.caa_pairs={ROOT / 'examples' / 'caa_pairs.jsonl'}"
    results = run(_compose(_overrides(tiny_model_dir, task_file, tmp_path, f"method={method}", pairs)))
    assert list(results["methods"]) == names
    summary = (tmp_path / "summary.md").read_text()
    for name in names:
        record = results["methods"][name]
        vector = SteeringVector.load(tmp_path / record["vector_file"], expected_hidden_size=32)
        assert vector.method == name
        assert (vector.layer, vector.strength) == (record["layer"], record["strength"])
        assert record["train_counts"]["positive"] > 0
        assert f"| {name} " in summary
        assert (tmp_path / "predictions" / f"{name}.csv").is_file()


def test_caa_without_pairs_file_is_a_config_error(tiny_model_dir: Path, task_file: Path, tmp_path: Path) -> None:
    cfg = _compose(_overrides(tiny_model_dir, task_file, tmp_path, "method=pas", "method.variants=[pasf,caa]"))
    with pytest.raises(ConfigError, match="caa but method.estimators.caa_pairs is not set"):
        run(cfg)
    cfg = _compose(_overrides(tiny_model_dir, task_file, tmp_path, "method=pca", "method.estimators.contrast=all"))
    with pytest.raises(ConfigError, match="method.estimators.contrast must be one of"):
        run(cfg)
