"""SteeringVector: a direction at one layer and site, its hook, and its safetensors file format."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

import pas
from pas.errors import UserError
from pas.io import atomic_write_bytes, atomic_write_json
from pas.models.layers import SITES, Site
from pas.steering.hooks import add_at_site

if TYPE_CHECKING:
    from pas.models.loading import LoadedModel

FORMAT_NAME = "pas-steering-vector"
FORMAT_VERSION = 1
_TENSOR_KEY = "vector"
_META_KEY = "pas_metadata"


class VectorFileError(UserError, ValueError):
    """A vector file is missing, malformed, or does not fit the model it is used with."""


@dataclass
class SteeringVector:
    """A steering direction ``v`` applied as ``h[:, -1] <- h[:, -1] + strength * v`` at ``site`` of ``layer``.

    ``metadata`` records where the vector came from: method, model name and revision, task, seed,
    train counts and the package version.
    """

    vector: torch.Tensor  # (H,)
    layer: int
    site: Site = "residual"
    strength: float = 1.0
    method: str = "custom"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vector.ndim != 1:
            raise VectorFileError(f"a steering vector must be 1-D (hidden size), got shape {tuple(self.vector.shape)}")
        if self.site not in SITES:
            raise VectorFileError(f"unknown site {self.site!r}; use one of {list(SITES)}")
        if not torch.isfinite(self.vector).all():
            raise VectorFileError(f"the {self.method} vector at layer {self.layer} has non-finite entries")

    @property
    def hidden_size(self) -> int:
        return int(self.vector.shape[0])

    @contextmanager
    def apply(
        self, model: nn.Module | LoadedModel, strength: float | None = None, layers_path: str | None = None
    ) -> Iterator[None]:
        """Add ``strength * v`` at the last position while the context is open; the hook is always removed.

        ``model`` is a torch model or the ``LoadedModel`` that ``pas.load_model`` returns.
        """
        scale = self.strength if strength is None else strength
        if not math.isfinite(scale):
            raise VectorFileError(f"steering strength must be finite, got {scale!r}")
        with add_at_site(model, self.layer, self.site, scale * self.vector, layers_path):
            yield

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "layer": self.layer,
            "site": self.site,
            "strength": self.strength,
            "hidden_size": self.hidden_size,
            "package_version": pas.__version__,
            **self.metadata,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` (tensor plus metadata) and a ``<path>.json`` copy of the metadata."""
        target = Path(path).with_suffix(".safetensors")
        header = self.header()
        blob = save_safetensors_bytes(
            {_TENSOR_KEY: self.vector.detach().float().cpu().contiguous()},
            metadata={_META_KEY: json.dumps(header, sort_keys=True)},
        )
        atomic_write_bytes(target, blob)
        atomic_write_json(target.with_suffix(".json"), header)
        return target

    @classmethod
    def load(
        cls,
        path: str | Path,
        expected_hidden_size: int | None = None,
        expected_model: str | None = None,
    ) -> SteeringVector:
        """Read a vector written by :meth:`save`, checking hidden size and model when given.

        Only safetensors is read; pickle files are rejected without being unpickled.
        """
        source = Path(path)
        if source.suffix != ".safetensors":
            source = source.with_suffix(".safetensors")
        if not source.is_file():
            raise VectorFileError(f"vector file not found: {source}")
        try:
            with safe_open(str(source), framework="pt") as handle:
                header = json.loads((handle.metadata() or {})[_META_KEY])
                vector = handle.get_tensor(_TENSOR_KEY)
        except (SafetensorError, KeyError, json.JSONDecodeError, ValueError, OSError) as err:
            # Checked only after safetensors rejected the file: the first byte of a valid file is the
            # low byte of its header length, which can be 0x80 like a pickle's first byte.
            with source.open("rb") as stream:
                magic = stream.read(2)
            if magic[:1] == b"\x80" or magic == b"PK":
                raise VectorFileError(
                    f"{source} looks like a pickle or torch.save archive; PAS reads vectors only from "
                    "safetensors files, which cannot run code when loaded. Import vectors of other tools "
                    "with pas.load_torch_vectors, which reads tensors only"
                ) from None
            raise VectorFileError(
                f"{source} is not a valid PAS vector file ({err.__class__.__name__}: {err}); "
                "write it again with SteeringVector.save"
            ) from err
        if header.get("format") != FORMAT_NAME:
            found = header.get("format")
            raise VectorFileError(f"{source} is a safetensors file but not a PAS vector (format {found!r})")
        if expected_hidden_size is not None and vector.shape[0] != expected_hidden_size:
            raise VectorFileError(
                f"{source} has hidden size {vector.shape[0]} but the model has {expected_hidden_size}; "
                f"the vector was made for model {header.get('model_name')!r}"
            )
        if expected_model is not None and header.get("model_name") not in (None, expected_model):
            raise VectorFileError(
                f"{source} was fitted on model {header.get('model_name')!r}, not {expected_model!r}; "
                "use a vector fitted on this model"
            )
        reserved = {"format", "format_version", "method", "layer", "site", "strength", "hidden_size"}
        return cls(
            vector=vector,
            layer=int(header["layer"]),
            site=header["site"],
            strength=float(header["strength"]),
            method=str(header["method"]),
            metadata={k: v for k, v in header.items() if k not in reserved},
        )
