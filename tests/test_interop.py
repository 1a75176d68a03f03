"""llama.cpp control-vector GGUF files and torch tensor files of other tools: export, import, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from pas.steering.interop import (
    ControlVector,
    load_control_vector,
    load_official_pas_vector,
    load_torch_vectors,
    save_control_vector,
)
from pas.steering.vector import SteeringVector, VectorFileError
from tests.helpers import tiny_llama

H = 32


def _control(layers: tuple[int, ...] = (1, 3)) -> ControlVector:
    generator = torch.Generator().manual_seed(0)
    return ControlVector(
        {layer: torch.randn(H, generator=generator) for layer in layers},
        model_hint="llama",
        metadata={"method": "ipas_all", "task": "bbq_sample", "train_counts": {"positive": 5, "negative": 3}},
    )


def _write_gguf(path: Path, tensors: dict[str, np.ndarray], arch: str = "controlvector") -> Path:
    writer = gguf.GGUFWriter(path, arch)
    writer.add_string(f"{arch}.model_hint", "llama")
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_round_trip_is_exact(tmp_path: Path) -> None:
    original = _control()
    path = save_control_vector(original, tmp_path / "v.gguf", hidden_size=H)
    restored = load_control_vector(path, expected_hidden_size=H, num_layers=4)
    assert restored.layers == [1, 3]
    for layer in (1, 3):
        assert torch.equal(restored.directions[layer], original.directions[layer])
    assert restored.model_hint == "llama"
    assert restored.site == "residual"
    assert restored.metadata == original.metadata
    assert not list(tmp_path.glob(".*.tmp"))


def test_gguf_file_has_llama_cpp_layout(tmp_path: Path) -> None:
    original = _control()
    path = save_control_vector(original, tmp_path / "v.gguf")
    reader = gguf.GGUFReader(path)
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "llama"
    layer_count = reader.get_field("controlvector.layer_count")
    assert layer_count.types == [gguf.GGUFValueType.UINT32]
    assert layer_count.contents() == 2
    # llama.cpp adds direction.N to the output of its 0-based layer N, the same block as ours.
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.3"]
    for tensor in reader.tensors:
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(tensor.shape) == [H]
        layer = int(tensor.name.split(".")[1])
        assert np.array_equal(tensor.data, original.directions[layer].numpy())


def test_steering_vector_round_trip(tmp_path: Path) -> None:
    vector = SteeringVector(
        torch.randn(H), layer=2, strength=4.0, method="pasf", metadata={"model_name": "tiny", "seed": 3}
    )
    path = save_control_vector(vector, tmp_path / "pasf.gguf", model_hint="llama")
    restored = load_control_vector(path).to_vector()
    assert torch.equal(restored.vector, vector.vector)
    assert restored.header() == vector.header()


def test_control_vector_apply_adds_every_layer() -> None:
    model = tiny_llama()
    control = _control()
    ids = torch.randint(3, 300, (2, 6))
    with torch.no_grad():
        base = model(input_ids=ids, output_hidden_states=True)
        with control.apply(model, strength=2.0):
            steered = model(input_ids=ids, output_hidden_states=True)
        with control.to_vector(1).apply(model, 2.0), control.to_vector(3).apply(model, 2.0):
            one_by_one = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert torch.equal(steered.hidden_states[1], base.hidden_states[1])
    expected = base.hidden_states[2].clone()
    expected[:, -1] += 2.0 * control.directions[1]
    torch.testing.assert_close(steered.hidden_states[2], expected, rtol=0, atol=1e-6)
    assert torch.equal(steered.logits, one_by_one)
    assert torch.equal(after, base.logits)


@pytest.mark.parametrize(
    ("control", "message"),
    [
        (ControlVector({0: torch.ones(H)}), "rejects direction.0"),
        (ControlVector({2: torch.ones(H)}, site="mlp"), "cannot write a 'mlp' vector"),
    ],
)
def test_export_rejects_what_llama_cpp_cannot_use(tmp_path: Path, control: ControlVector, message: str) -> None:
    with pytest.raises(VectorFileError, match=message):
        save_control_vector(control, tmp_path / "bad.gguf")
    assert not list(tmp_path.iterdir())


def test_export_checks_hidden_size(tmp_path: Path) -> None:
    with pytest.raises(VectorFileError, match="vectors of length 32 but the model's hidden size is 48"):
        save_control_vector(_control(), tmp_path / "v.gguf", hidden_size=48)


def test_import_rejects_wrong_hidden_size(tmp_path: Path) -> None:
    path = save_control_vector(_control(), tmp_path / "v.gguf")
    with pytest.raises(VectorFileError, match="vectors of length 32 but the model's hidden size is 576"):
        load_control_vector(path, expected_hidden_size=576)


def test_import_rejects_layer_beyond_model(tmp_path: Path) -> None:
    path = save_control_vector(_control(), tmp_path / "v.gguf")
    with pytest.raises(VectorFileError, match="direction for block 3 but the model has 2 decoder layers"):
        load_control_vector(path, num_layers=2)


def test_import_reads_repeng_style_file(tmp_path: Path) -> None:
    # repeng's export_gguf writes these keys and tensors and no PAS metadata.
    data = np.linspace(-1, 1, H, dtype=np.float32)
    path = _write_gguf(tmp_path / "repeng.gguf", {"direction.5": data, "direction.6": 2 * data})
    control = load_control_vector(path)
    assert control.layers == [5, 6]
    assert control.metadata == {}
    assert torch.equal(control.directions[6], torch.from_numpy(2 * data))


@pytest.mark.parametrize(
    ("tensors", "arch", "message"),
    [
        ({"direction.0": np.ones(H, dtype=np.float32)}, "controlvector", "named direction.N with N >= 1"),
        ({"blk.0.weight": np.ones(H, dtype=np.float32)}, "controlvector", "tensor named 'blk.0.weight'"),
        ({"direction.1": np.ones(H, dtype=np.float16)}, "controlvector", "needs 1-D float32 directions"),
        ({"direction.1": np.ones((2, H), dtype=np.float32)}, "controlvector", "needs 1-D float32 directions"),
        (
            {"direction.1": np.ones(H, dtype=np.float32), "direction.2": np.ones(H + 1, dtype=np.float32)},
            "controlvector",
            r"directions of different lengths \[32, 33\]",
        ),
        ({"token_embd.weight": np.ones(H, dtype=np.float32)}, "llama", "general.architecture='llama'"),
        ({}, "controlvector", "has no direction.N tensors"),
    ],
)
def test_import_rejects_malformed_gguf(tmp_path: Path, tensors: dict[str, np.ndarray], arch: str, message: str) -> None:
    path = _write_gguf(tmp_path / "bad.gguf", tensors, arch)
    with pytest.raises(VectorFileError, match=message):
        load_control_vector(path)


def test_import_rejects_files_that_are_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "vector.gguf"
    path.write_bytes(b"PK\x03\x04 a zip archive")
    with pytest.raises(VectorFileError, match="is not a GGUF file"):
        load_control_vector(path)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(save_control_vector(_control(), tmp_path / "v.gguf").read_bytes()[:40])
    with pytest.raises(VectorFileError, match="is not a valid GGUF file"):
        load_control_vector(truncated)


def test_missing_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(VectorFileError, match="control vector file not found"):
        load_control_vector(tmp_path / "none.gguf")
    with pytest.raises(VectorFileError, match="vector file not found"):
        load_torch_vectors(tmp_path / "none.pt", layer=1)
    with pytest.raises(VectorFileError, match="vector file not found"):
        load_official_pas_vector(tmp_path / "iBAS_all_layer3_strength1.pt")


def test_torch_single_tensor_needs_layer(tmp_path: Path) -> None:
    vector = torch.randn(1, H, dtype=torch.bfloat16)
    torch.save(vector, tmp_path / "v.pt")
    with pytest.raises(VectorFileError, match="pass layer="):
        load_torch_vectors(tmp_path / "v.pt")
    control = load_torch_vectors(tmp_path / "v.pt", layer=2, expected_hidden_size=H)
    assert control.layers == [2]
    assert control.site == "residual"
    assert torch.equal(control.directions[2], vector[0].float())


def test_torch_steering_vectors_layouts(tmp_path: Path) -> None:
    activations = {3: torch.randn(H), 5: torch.randn(H)}
    torch.save(activations, tmp_path / "plain.pt")
    plain = load_torch_vectors(tmp_path / "plain.pt")
    assert plain.layers == [3, 5]
    assert torch.equal(plain.directions[5], activations[5])
    torch.save({"layer_activations": activations, "layer_type": "mlp"}, tmp_path / "typed.pt")
    typed = load_torch_vectors(tmp_path / "typed.pt", layer=3)
    assert typed.site == "mlp"
    assert typed.layers == [3]
    torch.save({"7": torch.randn(H)}, tmp_path / "string_keys.pt")
    assert load_torch_vectors(tmp_path / "string_keys.pt").layers == [7]


_UNPICKLED: list[str] = []


def _record_unpickling() -> dict[str, str]:
    _UNPICKLED.append("code ran")
    return {}


class _Payload:
    """An object whose unpickling would run ``_record_unpickling``."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _record_unpickling, ()


def test_torch_pickled_object_is_rejected_unrun(tmp_path: Path) -> None:
    torch.save({"vector": _Payload()}, tmp_path / "object.pt")
    with pytest.raises(VectorFileError, match=r"cannot be loaded with torch.load\(weights_only=True\): Unsupported"):
        load_torch_vectors(tmp_path / "object.pt", layer=1)
    (tmp_path / "object.pkl").write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(VectorFileError, match="never unpickles other objects"):
        load_torch_vectors(tmp_path / "object.pkl", layer=1)
    assert _UNPICKLED == []


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (torch.randn(2, H), {"layer": 1}, r"has shape \(2, 32\), expected \(hidden_size,\)"),
        (torch.arange(H), {"layer": 1}, "is a torch.int64 tensor, expected a float tensor"),
        ({"layer_one": torch.randn(H)}, {}, "expected 0-based layer numbers as dict keys"),
        ({2: torch.randn(H)}, {"layer": 4}, r"has no vector for layer 4; it has layers \[2\]"),
        ({"layer_activations": {1: torch.randn(H)}, "layer_type": "input_layernorm"}, {}, "has no PAS site"),
        ([torch.randn(H)], {"layer": 1}, "contains a list; expected a tensor or a dict"),
        (torch.randn(H), {"layer": 1, "expected_hidden_size": 64}, "vectors of length 32"),
    ],
)
def test_torch_malformed_contents(tmp_path: Path, content: object, kwargs: dict, message: str) -> None:
    torch.save(content, tmp_path / "v.pt")
    with pytest.raises(VectorFileError, match=message):
        load_torch_vectors(tmp_path / "v.pt", **kwargs)


def test_torch_garbage_file(tmp_path: Path) -> None:
    (tmp_path / "v.pt").write_bytes(b"not a torch file")
    with pytest.raises(VectorFileError, match="v.pt"):
        load_torch_vectors(tmp_path / "v.pt", layer=0)


def test_official_pas_vector_placement(tmp_path: Path) -> None:
    vector = torch.randn(H, dtype=torch.float16)
    path = tmp_path / "iBAS_all_layer14_strength4.0.pt"
    torch.save(vector, path)
    measured = load_official_pas_vector(path)
    assert measured.layer == 13  # read at hidden_states[14], the output of block 13
    assert measured.method == "ipas_all"
    assert measured.strength == 4.0
    assert measured.metadata["source_layer"] == 14
    assert torch.equal(measured.vector, vector.float())
    assert load_official_pas_vector(path, placement="applied").layer == 14
    assert load_official_pas_vector(path, site="mlp").layer == 14


def test_official_pas_vector_bad_input(tmp_path: Path) -> None:
    torch.save(torch.randn(H), tmp_path / "BAS_full_mcq_layer0_strength1.pt")
    with pytest.raises(VectorFileError, match="embedding output"):
        load_official_pas_vector(tmp_path / "BAS_full_mcq_layer0_strength1.pt")
    assert load_official_pas_vector(tmp_path / "BAS_full_mcq_layer0_strength1.pt", placement="applied").layer == 0
    torch.save(torch.randn(H), tmp_path / "vector.pt")
    with pytest.raises(VectorFileError, match="does not follow the official PAS naming"):
        load_official_pas_vector(tmp_path / "vector.pt")
    torch.save(torch.randn(H), tmp_path / "iBAS_all_layer3_strengthhigh.pt")
    with pytest.raises(VectorFileError, match="is not a number"):
        load_official_pas_vector(tmp_path / "iBAS_all_layer3_strengthhigh.pt")


def test_control_vector_validates_directions() -> None:
    with pytest.raises(VectorFileError, match="one length"):
        ControlVector({1: torch.ones(H), 2: torch.ones(H + 1)})
    with pytest.raises(VectorFileError, match="non-finite"):
        ControlVector({1: torch.full((H,), float("nan"))})
    with pytest.raises(VectorFileError, match="at least one layer"):
        ControlVector({})
    with pytest.raises(VectorFileError, match="pick one with layer="):
        _control().to_vector()
