from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from pas.steering.vector import SteeringVector, VectorFileError
from tests.helpers import tiny_llama


def _vector() -> SteeringVector:
    return SteeringVector(
        vector=torch.randn(32),
        layer=2,
        site="residual",
        strength=4.0,
        method="ipas_all",
        metadata={"model_name": "tiny", "task": "demo", "seed": 3, "train_counts": {"positive": 5, "negative": 2}},
    )


def test_save_load_round_trip(tmp_path: Path) -> None:
    original = _vector()
    path = original.save(tmp_path / "vec")
    assert path.name == "vec.safetensors"
    assert (tmp_path / "vec.json").is_file()
    loaded = SteeringVector.load(path, expected_hidden_size=32, expected_model="tiny")
    assert torch.equal(loaded.vector, original.vector)
    assert (loaded.layer, loaded.site, loaded.strength, loaded.method) == (2, "residual", 4.0, "ipas_all")
    assert loaded.metadata["train_counts"] == {"positive": 5, "negative": 2}
    assert loaded.metadata["seed"] == 3


def test_hidden_size_mismatch(tmp_path: Path) -> None:
    path = _vector().save(tmp_path / "vec")
    with pytest.raises(VectorFileError, match="hidden size 32 but the model has 64"):
        SteeringVector.load(path, expected_hidden_size=64)


def test_model_mismatch(tmp_path: Path) -> None:
    path = _vector().save(tmp_path / "vec")
    with pytest.raises(VectorFileError, match="fitted on model 'tiny', not 'other'"):
        SteeringVector.load(path, expected_model="other")


def test_pickle_rejected_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (marker.write_text, ("unpickled",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(VectorFileError, match="pickle"):
        SteeringVector.load(path)
    assert not marker.exists()


def test_corrupted_file(tmp_path: Path) -> None:
    path = _vector().save(tmp_path / "vec")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(VectorFileError, match="not a valid PAS vector file"):
        SteeringVector.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VectorFileError, match="not found"):
        SteeringVector.load(tmp_path / "absent.safetensors")


def test_apply_adds_scaled_vector() -> None:
    model = tiny_llama()
    vec = _vector()
    ids = torch.randint(3, 300, (1, 6))
    with torch.no_grad():
        base = model(input_ids=ids, output_hidden_states=True).hidden_states[3]
        with vec.apply(model, strength=0.5):
            steered = model(input_ids=ids, output_hidden_states=True).hidden_states[3]
    torch.testing.assert_close(steered[0, -1], base[0, -1] + 0.5 * vec.vector, rtol=0, atol=1e-6)


def test_non_finite_strength() -> None:
    with pytest.raises(VectorFileError, match="finite"), _vector().apply(tiny_llama(), strength=float("nan")):
        pass
