"""Exchange steering vectors with other tools: llama.cpp control vectors (GGUF) and torch tensor files.

llama.cpp control vectors (read in ggml-org/llama.cpp: ``common_control_vector_load_one`` in
``common/common.cpp`` and ``llama_adapter_cvec`` in ``src/llama-adapter.cpp``) are GGUF files with
``general.architecture = "controlvector"``, ``controlvector.model_hint`` and
``controlvector.layer_count``, and one 1-D float32 tensor ``direction.N`` of the hidden size per
steered layer. llama.cpp adds ``direction.N`` to the output of its 0-based layer ``N`` (the
``l_out`` of layer ``N``) and rejects ``direction.0``. So our 0-based decoder block ``L`` with site
``residual`` is ``direction.L``, and block 0 cannot be exported. repeng's ``export_gguf`` writes
the same layout with the same numbering. PAS metadata travels as one JSON string under
``pas.metadata``, which llama.cpp ignores.

NOTE: llama.cpp's own ``llama-cvector-generator`` names the difference it measured at the output of
layer ``N - 1`` ``direction.N``, one layer before the layer where llama.cpp adds it. Files are
imported where llama.cpp adds them (``direction.N`` to block ``N``), whatever tool wrote them.

Tensor files from other tools are read only with ``torch.load(path, weights_only=True)``, which
refuses to unpickle anything but tensors and plain containers, so a file cannot run code.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import gguf
import numpy as np
import torch
from torch import nn

from pas.models.layers import SITES, Site
from pas.steering.hooks import add_at_site
from pas.steering.vector import SteeringVector, VectorFileError

if TYPE_CHECKING:
    from pas.models.loading import LoadedModel

CONTROL_VECTOR_ARCH = "controlvector"
_MODEL_HINT_KEY = f"{CONTROL_VECTOR_ARCH}.model_hint"
_LAYER_COUNT_KEY = f"{CONTROL_VECTOR_ARCH}.layer_count"
_METADATA_KEY = "pas.metadata"
_DIRECTION = re.compile(r"^direction\.(\d+)$")
# Header fields of a SteeringVector that ControlVector keeps in its own fields, not in metadata.
_VECTOR_FIELDS = {"format", "format_version", "layer", "site", "hidden_size"}

# steering-vectors names the hooked module by "layer_type"; these are the ones PAS has a site for.
# Its "post_attention_layernorm" is the module of that name, which in Gemma 2 and 3 is not PAS's
# post_attn_norm (see pas.models.layers).
_STEERING_VECTORS_SITES: dict[str, Site] = {
    "decoder_block": "residual",
    "self_attn": "attn",
    "mlp": "mlp",
    "post_attention_layernorm": "post_attn_norm",
}

# Method names of the official PAS research code and the variant names used here.
_OFFICIAL_METHODS = {
    "BAS_full_mcq": "pasf",
    "iBAS_all": "ipas_all",
    "iBAS_wrong_only": "ipas_wrong_only",
    "handcrafted_prompt_pair": "caa",
}
_OFFICIAL_FILE = re.compile(r"^(?P<method>.+)_layer(?P<layer>\d+)_strength(?P<strength>[^_]+)$")


@dataclass(eq=False)
class ControlVector:
    """Steering directions at several decoder blocks, all at one site, as other tools exchange them.

    ``directions[L]`` (shape ``(H,)``, float32) is added at ``site`` of 0-based decoder block ``L``.
    ``model_hint`` names the model family the vectors were made for (llama.cpp and repeng write the
    architecture, such as ``llama``). ``metadata`` is any JSON-serializable provenance.
    """

    directions: dict[int, torch.Tensor]
    model_hint: str = ""
    site: Site = "residual"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise VectorFileError("a control vector needs at least one layer direction, got none")
        if self.site not in SITES:
            raise VectorFileError(f"unknown site {self.site!r}; use one of {list(SITES)}")
        sizes = set()
        checked: dict[int, torch.Tensor] = {}
        for layer, direction in sorted(self.directions.items()):
            if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
                raise VectorFileError(f"control vector layers must be 0-based block indices, got {layer!r}")
            if not isinstance(direction, torch.Tensor) or direction.ndim != 1 or not direction.is_floating_point():
                shape = tuple(direction.shape) if isinstance(direction, torch.Tensor) else type(direction).__name__
                raise VectorFileError(f"the direction at layer {layer} must be a 1-D float tensor, got {shape}")
            if not torch.isfinite(direction).all():
                raise VectorFileError(f"the direction at layer {layer} has non-finite entries")
            sizes.add(int(direction.shape[0]))
            checked[layer] = direction.detach().to("cpu", torch.float32)
        if len(sizes) != 1:
            raise VectorFileError(
                f"all directions of a control vector must have one length, got lengths {sorted(sizes)}"
            )
        self.directions = checked

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.directions.values())).shape[0])

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    @classmethod
    def from_vector(cls, vector: SteeringVector, model_hint: str = "") -> ControlVector:
        """Wrap one SteeringVector; its method, strength and metadata go to ``metadata``."""
        metadata = {k: v for k, v in vector.header().items() if k not in _VECTOR_FIELDS}
        return cls({vector.layer: vector.vector}, model_hint=model_hint, site=vector.site, metadata=metadata)

    def to_vector(self, layer: int | None = None) -> SteeringVector:
        """Return the direction at ``layer`` (default: the only one) as a SteeringVector.

        ``method`` and ``strength`` come from ``metadata`` when present, else ``imported`` and 1.0.
        """
        if layer is None:
            if len(self.directions) != 1:
                raise VectorFileError(f"this control vector has layers {self.layers}; pick one with layer=")
            layer = self.layers[0]
        if layer not in self.directions:
            raise VectorFileError(f"this control vector has no direction at layer {layer}; it has layers {self.layers}")
        rest = {k: v for k, v in self.metadata.items() if k not in ("method", "strength")}
        return SteeringVector(
            vector=self.directions[layer].clone(),
            layer=layer,
            site=self.site,
            strength=float(self.metadata.get("strength", 1.0)),
            method=str(self.metadata.get("method", "imported")),
            metadata=rest,
        )

    @contextmanager
    def apply(
        self, model: nn.Module | LoadedModel, strength: float = 1.0, layers_path: str | None = None
    ) -> Iterator[None]:
        """Add ``strength * directions[L]`` at ``site`` of every block ``L`` while the context is open.

        Like every PAS hook, each vector goes to the last position only (and to each new position
        in cached generation). llama.cpp, repeng and steering-vectors add theirs at every position,
        so the same file steers less here than there.
        """
        if not math.isfinite(strength):
            raise VectorFileError(f"steering strength must be finite, got {strength!r}")
        with ExitStack() as stack:
            for layer in self.layers:
                stack.enter_context(
                    add_at_site(model, layer, self.site, strength * self.directions[layer], layers_path)
                )
            yield


def _check_hidden_size(source: Path | str, found: int, expected: int | None) -> None:
    if expected is not None and found != expected:
        raise VectorFileError(
            f"{source} has vectors of length {found} but the model's hidden size is {expected}; "
            "use a file made for this model"
        )


def save_control_vector(
    vectors: ControlVector | SteeringVector,
    path: str | os.PathLike[str],
    *,
    model_hint: str | None = None,
    hidden_size: int | None = None,
) -> Path:
    """Write ``vectors`` as a llama.cpp control-vector GGUF file and return its path.

    Block ``L`` becomes the tensor ``direction.L``. Only ``residual`` vectors at blocks 1 and later
    can be written, because llama.cpp adds control vectors to layer outputs and never to layer 0.
    ``hidden_size``, when given, must equal the vectors' length. The file is written to a temporary
    name and renamed, so an interrupted write leaves no partial file.
    """
    control = vectors if isinstance(vectors, ControlVector) else ControlVector.from_vector(vectors)
    target = Path(path)
    if control.site != "residual":
        raise VectorFileError(
            f"cannot write a {control.site!r} vector as a llama.cpp control vector: llama.cpp adds control "
            "vectors to layer outputs, which is the residual site"
        )
    if 0 in control.directions:
        raise VectorFileError(
            "cannot write a vector at block 0 as a llama.cpp control vector: llama.cpp rejects direction.0 "
            "and never steers the output of its first layer; fit the vector at block 1 or later"
        )
    _check_hidden_size(target, control.hidden_size, hidden_size)
    hint = control.model_hint if model_hint is None else model_hint
    try:
        metadata_json = json.dumps(control.metadata, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise VectorFileError(f"the control vector's metadata must be JSON-serializable: {err}") from err

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(staging, CONTROL_VECTOR_ARCH)
        writer.add_string(_MODEL_HINT_KEY, hint)
        writer.add_uint32(_LAYER_COUNT_KEY, len(control.directions))
        writer.add_string(_METADATA_KEY, metadata_json)
        for layer in control.layers:
            writer.add_tensor(f"direction.{layer}", control.directions[layer].numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return target


def _require_file(path: str | os.PathLike[str], kind: str) -> Path:
    source = Path(path)
    if not source.is_file():
        raise VectorFileError(f"{kind} not found: {source}")
    return source


def _open_gguf(source: Path) -> gguf.GGUFReader:
    with source.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise VectorFileError(f"{source} is not a GGUF file: it starts with {magic!r}, not b'GGUF'")
    try:
        return gguf.GGUFReader(source)
    except (ValueError, IndexError, KeyError, OSError) as err:
        raise VectorFileError(f"{source} is not a valid GGUF file ({err.__class__.__name__}: {err})") from err


def _string_field(reader: gguf.GGUFReader, key: str) -> str | None:
    found = reader.get_field(key)
    return None if found is None else str(found.contents())


def load_control_vector(
    path: str | os.PathLike[str],
    *,
    expected_hidden_size: int | None = None,
    num_layers: int | None = None,
) -> ControlVector:
    """Read a llama.cpp control-vector GGUF file (written by PAS, repeng or llama.cpp).

    ``direction.N`` becomes the residual direction of 0-based block ``N``. The checks are those
    llama.cpp makes (names ``direction.N`` with ``N >= 1``, float32, 1-D, one length), plus the
    hidden size and the number of layers of the target model when given.
    """
    source = _require_file(path, "control vector file")
    reader = _open_gguf(source)
    architecture = _string_field(reader, "general.architecture")
    if architecture != CONTROL_VECTOR_ARCH:
        raise VectorFileError(
            f"{source} is a GGUF file with general.architecture={architecture!r}, not a control vector "
            f"({CONTROL_VECTOR_ARCH!r}); a model GGUF file loads with pas.load_model(folder, gguf_file=...)"
        )
    directions: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        match = _DIRECTION.match(tensor.name)
        if match is None or int(match.group(1)) == 0:
            raise VectorFileError(
                f"{source} has a tensor named {tensor.name!r}; control vector tensors are named direction.N with N >= 1"
            )
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise VectorFileError(
                f"{source}: {tensor.name} is a {tensor.tensor_type.name} tensor of shape {list(tensor.shape)}; "
                "llama.cpp needs 1-D float32 directions"
            )
        layer = int(match.group(1))
        if layer in directions:
            raise VectorFileError(f"{source} has {tensor.name} twice")
        directions[layer] = torch.from_numpy(np.array(tensor.data, dtype=np.float32, copy=True))
    if not directions:
        raise VectorFileError(f"{source} has no direction.N tensors")
    lengths = sorted({int(d.shape[0]) for d in directions.values()})
    if len(lengths) != 1:
        raise VectorFileError(f"{source} has directions of different lengths {lengths}; all must be the hidden size")
    _check_hidden_size(source, lengths[0], expected_hidden_size)
    if num_layers is not None and max(directions) >= num_layers:
        raise VectorFileError(
            f"{source} has a direction for block {max(directions)} but the model has {num_layers} decoder "
            f"layers, numbered 0 to {num_layers - 1}; use a file made for this model"
        )
    metadata_json = _string_field(reader, _METADATA_KEY)
    try:
        metadata = json.loads(metadata_json) if metadata_json else {}
    except json.JSONDecodeError as err:
        raise VectorFileError(f"{source}: {_METADATA_KEY} is not valid JSON ({err})") from err
    return ControlVector(directions, model_hint=_string_field(reader, _MODEL_HINT_KEY) or "", metadata=metadata)


def _unpickler_detail(err: pickle.UnpicklingError) -> str:
    """Return the reason that torch's weights-only unpickler gives, without its advice to unpickle anyway."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", str(err), flags=re.DOTALL)
    detail = found.group(1).strip() if found else str(err).splitlines()[0]
    return detail.split(". ")[0]


def _torch_load(source: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # Files written by plain pickle (not torch.save) warn about their protocol before failing.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise VectorFileError(
            f"{source} cannot be loaded with torch.load(weights_only=True): {_unpickler_detail(err)}. PAS reads "
            "only tensors and dicts or lists of tensors from torch files and never unpickles other objects, "
            "because unpickling can run code. Save plain tensors instead: torch.save(vector.cpu(), path) or a "
            "dict of layer -> tensor"
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise VectorFileError(f"{source} is not a readable torch file ({err.__class__.__name__}: {err})") from err


def _as_direction(value: Any, source: Path, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        found = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
        raise VectorFileError(f"{source}: {where} is {found}, expected a float tensor")
    if value.ndim == 2 and value.shape[0] == 1:
        value = value[0]  # (1, H), as some tools keep a batch axis
    if value.ndim != 1:
        raise VectorFileError(f"{source}: {where} has shape {tuple(value.shape)}, expected (hidden_size,)")
    return value.float()


def _layer_key(key: Any, source: Path) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.isdigit():
        return int(key)
    raise VectorFileError(f"{source}: expected 0-based layer numbers as dict keys, got {key!r}")


def load_torch_vectors(
    path: str | os.PathLike[str],
    *,
    layer: int | None = None,
    site: Site | None = None,
    expected_hidden_size: int | None = None,
) -> ControlVector:
    """Read steering vectors that another tool saved with ``torch.save`` as plain tensors.

    Accepted contents: one tensor of shape ``(H,)`` or ``(1, H)`` (needs ``layer``); a dict of
    0-based layer -> tensor, such as steering-vectors' ``layer_activations``; or a dict with
    ``layer_activations`` and ``layer_type``, a steering-vectors ``SteeringVector`` stored as a dict.
    ``site`` defaults to the one the file names, else ``residual``. The file is loaded only with
    ``torch.load(weights_only=True)``: pickled objects such as a whole steering-vectors or repeng
    object are rejected with an error, never unpickled.
    """
    source = _require_file(path, "vector file")
    loaded = _torch_load(source)
    named_site: Site | None = None
    if isinstance(loaded, Mapping) and "layer_activations" in loaded:
        layer_type = loaded.get("layer_type", "decoder_block")
        if layer_type not in _STEERING_VECTORS_SITES:
            raise VectorFileError(
                f"{source} steers layer_type {layer_type!r}, which has no PAS site; supported: "
                f"{sorted(_STEERING_VECTORS_SITES)}"
            )
        named_site = _STEERING_VECTORS_SITES[layer_type]
        loaded = loaded["layer_activations"]
    if isinstance(loaded, torch.Tensor):
        if layer is None:
            raise VectorFileError(f"{source} contains one tensor and no layer number; pass layer=<0-based block>")
        directions = {layer: _as_direction(loaded, source, "the tensor")}
    elif isinstance(loaded, Mapping):
        directions = {
            _layer_key(key, source): _as_direction(value, source, f"entry {key!r}") for key, value in loaded.items()
        }
        if layer is not None:
            if layer not in directions:
                raise VectorFileError(f"{source} has no vector for layer {layer}; it has layers {sorted(directions)}")
            directions = {layer: directions[layer]}
    else:
        raise VectorFileError(
            f"{source} contains a {type(loaded).__name__}; expected a tensor or a dict of layer -> tensor"
        )
    control = ControlVector(
        directions, site=site or named_site or "residual", metadata={"source_file": source.name, "source": "torch"}
    )
    _check_hidden_size(source, control.hidden_size, expected_hidden_size)
    return control


def load_official_pas_vector(
    path: str | os.PathLike[str],
    *,
    site: Site = "residual",
    placement: Literal["measured", "applied"] = "measured",
    expected_hidden_size: int | None = None,
) -> SteeringVector:
    """Read a vector file of the official PAS research code, ``<method>_layer<L>_strength<S>.pt``.

    Each file contains the raw ``(H,)`` vector; the strength in the name is the grid strength it was
    evaluated with. That code read residual activations from ``hidden_states[L]``, the output of
    block ``L - 1``, but added the vector to the output of block ``L``. ``placement="measured"``
    (default) puts a residual vector at block ``L - 1``, where it was measured, so reading and
    writing happen at one site; ``"applied"`` puts it at block ``L``, which reproduces that code's
    runs. Other sites were read and added at block ``L`` and stay there.
    """
    source = _require_file(path, "vector file")
    match = _OFFICIAL_FILE.match(source.stem)
    if match is None:
        raise VectorFileError(
            f"{source.name} does not follow the official PAS naming <method>_layer<L>_strength<S>.pt; "
            "for other tensor files use pas.load_torch_vectors(path, layer=...)"
        )
    try:
        strength = float(match.group("strength"))
    except ValueError as err:
        raise VectorFileError(f"{source.name}: the strength {match.group('strength')!r} is not a number") from err
    official_layer = int(match.group("layer"))
    layer = official_layer
    if site == "residual" and placement == "measured":
        if official_layer == 0:
            raise VectorFileError(
                f"{source.name} was measured at hidden_states[0], the embedding output, which is no block's "
                "output; load it with placement='applied' to put it at block 0"
            )
        layer = official_layer - 1
    elif placement not in ("measured", "applied"):
        raise VectorFileError(f"placement must be 'measured' or 'applied', got {placement!r}")
    vector = _as_direction(_torch_load(source), source, "the file")
    _check_hidden_size(source, int(vector.shape[0]), expected_hidden_size)
    method = match.group("method")
    return SteeringVector(
        vector=vector,
        layer=layer,
        site=site,
        strength=strength,
        method=_OFFICIAL_METHODS.get(method, method),
        metadata={
            "source": "pas-official",
            "source_file": source.name,
            "source_layer": official_layer,
            "placement": placement,
        },
    )
