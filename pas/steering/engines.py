"""Evaluation engines that score many steering configurations on one fixed set of prompts.

An engine returns last-position logits restricted to the answer-letter tokens, unsteered or with
``delta`` added at one site of one layer (``K`` deltas at a time).

``NaiveEngine`` runs a full forward pass per configuration and is the reference. ``FastEngine``
gives the same predictions from far less work. Under causal attention, steering layer ``L`` at the
last position cannot change anything before layer ``L`` or at any earlier position. So one
batched pass keeps the key/value cache of every position but the last, and the input of every
layer at the last position. Each configuration then re-runs only the last position through layers
``L..N-1``, and ``K`` configurations share one pass by stacking them along the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from pas.evaluation.scoring import EncodedBatch, iter_batches, last_position_logits, model_device
from pas.models.layers import Site, find_decoder_layers
from pas.steering.hooks import add_at_site, add_steering


class Engine(Protocol):
    """Computes letter-token logits for fixed prompts, unsteered or under steering."""

    letter_positions: list[list[int]]

    def unsteered_logits(self) -> torch.Tensor:
        """Return logits ``(N, V')`` over the kept token ids, in input order."""
        ...

    def steered_logits(self, layer: int, site: Site, deltas: torch.Tensor) -> torch.Tensor:
        """Return logits ``(K, N, V')`` with ``deltas[k]`` (``(K, H)``) added at ``site`` of ``layer``."""
        ...


def _kept_ids(letter_ids: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Return the sorted union of letter token ids and each letter's positions within it."""
    keep = sorted({token for variants in letter_ids for token in variants})
    where = {token: k for k, token in enumerate(keep)}
    return keep, [[where[token] for token in variants] for variants in letter_ids]


@contextmanager
def restricted_lm_head(model: nn.Module, keep: list[int]) -> Iterator[None]:
    """Make the output embedding compute only the logits of ``keep``; restored on exit.

    Operations the model applies after the head (logit scaling, soft-capping) act elementwise, so
    the kept logits equal the same columns of the full logits.
    """
    head = model.get_output_embeddings()
    weight = head.weight[keep]
    bias = head.bias[keep] if getattr(head, "bias", None) is not None else None
    head.forward = lambda hidden: F.linear(hidden, weight, bias)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del head.forward


class NaiveEngine:
    """One full forward pass over every prompt per configuration: the reference implementation.

    With ``batch_size=1`` this is one full pass per item per configuration.
    """

    def __init__(
        self,
        model: nn.Module,
        token_lists: Sequence[Sequence[int]],
        batch_size: int,
        letter_ids: list[list[int]],
        layers_path: str | None = None,
    ) -> None:
        self.model = model
        self.token_lists = token_lists
        self.batch_size = batch_size
        self.layers_path = layers_path
        self.keep, self.letter_positions = _kept_ids(letter_ids)

    @torch.inference_mode()
    def _logits(self) -> torch.Tensor:
        device = model_device(self.model)
        out = torch.empty(len(self.token_lists), len(self.keep))
        for batch in iter_batches(self.token_lists, self.batch_size, device):
            logits = last_position_logits(self.model, batch)
            out[batch.index] = logits[:, self.keep].float().cpu()
        return out

    def unsteered_logits(self) -> torch.Tensor:
        return self._logits()

    def steered_logits(self, layer: int, site: Site, deltas: torch.Tensor) -> torch.Tensor:
        results = []
        for delta in deltas:
            with add_at_site(self.model, layer, site, delta, self.layers_path):
                results.append(self._logits())
        return torch.stack(results)


@dataclass
class _Prepared:
    batch: EncodedBatch
    cache: Any  # key/value cache of all positions but the last
    layer_inputs: torch.Tensor  # (N_layers, B, H): input of each decoder layer at the last position


def _passthrough(*args: Any, **kwargs: Any) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _tuple_passthrough(*args: Any, **kwargs: Any) -> tuple[torch.Tensor]:
    # For blocks that return a tuple whose first element is the hidden states (older or custom code).
    return (_passthrough(*args, **kwargs),)


def _hidden_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _isolated_cache(cache: Any) -> Any:
    """Return a shallow copy of ``cache`` with its own layer objects.

    Appending to the copy replaces the copy's tensors (the cache concatenates) and leaves the
    original cache at the prefix length, so it serves every later configuration.
    """
    isolated = copy.copy(cache)
    isolated.layers = [copy.copy(layer) for layer in cache.layers]
    return isolated


def _config_mask(
    attention_mask: torch.Tensor, copies: int, dtype: torch.dtype, cached: int | None = None
) -> torch.Tensor:
    """Build the additive 4D mask ``(B, 1, K, C + K)`` for ``K`` configurations stacked as positions.

    ``C`` (``cached``, default all ``T - 1``) is the number of prefix positions in the cache layer,
    which are the last ``C`` ones. Each of the ``K`` query positions attends to the real tokens
    among them and to itself, never to the other configurations, so it computes what a separate
    pass would compute.
    """
    rows = attention_mask.shape[0]
    prefix_mask = attention_mask[:, :-1]
    if cached is not None:
        prefix_mask = prefix_mask[:, prefix_mask.shape[1] - cached :]
    prefix = prefix_mask.bool().unsqueeze(1).expand(rows, copies, -1)  # (B, K, C)
    own = torch.eye(copies, dtype=torch.bool, device=attention_mask.device).expand(rows, copies, copies)
    allowed = torch.cat([prefix, own], dim=-1).unsqueeze(1)  # (B, 1, K, C + K)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def _cached_lengths(cache: Any) -> list[int]:
    """Return the number of cached positions per cache layer (sliding-window layers keep fewer)."""
    return [int(layer.keys.shape[-2]) for layer in cache.layers]


def _layer_types(model: nn.Module) -> list[str] | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(config, "layer_types", None)


def _last_position_masks(
    attention_mask: torch.Tensor, lengths: list[int], layer_types: list[str] | None, copies: int, dtype: torch.dtype
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Build the attention mask of the stacked last positions for every layer.

    A sliding-window cache layer keeps only the last ``window - 1`` prefix positions, all of which
    lie inside the window of the last position, so its mask covers just those. When layers keep
    different numbers of positions (full and sliding layers mixed), the masks go to the model as a
    dict keyed by the config's layer type. Models with ``layer_types`` in their config accept that
    dict (checked for Qwen2, Qwen3, Gemma 2 and Gemma 3 in transformers 5.25).
    """
    if len(set(lengths)) == 1:
        return _config_mask(attention_mask, copies, dtype, lengths[0])
    by_type: dict[str, int] = {}
    if layer_types is not None and len(layer_types) == len(lengths):
        for kind, length in zip(layer_types, lengths):
            if by_type.setdefault(kind, length) != length:
                break
        else:
            return {kind: _config_mask(attention_mask, copies, dtype, length) for kind, length in by_type.items()}
    raise ValueError(
        f"the fast engine cannot build one attention mask per layer type for this model: its cache layers "
        f"contain {lengths} prefix positions and its config has layer_types={layer_types}; use sweep.engine=naive"
    )


class FastEngine:
    """Exact steered evaluation that re-runs only the last position, from the steered layer on.

    ``K`` configurations share one pass as ``K`` extra positions that all sit at the last prompt
    position: the same token and position id, and a mask that shows each of them the cached
    prefix and itself. The prefix cache is read by all of them and copied once per pass.
    """

    def __init__(
        self,
        model: nn.Module,
        token_lists: Sequence[Sequence[int]],
        batch_size: int,
        letter_ids: list[list[int]],
        layers_path: str | None = None,
        configs_per_pass: int = 64,
    ) -> None:
        if any(len(ids) < 2 for ids in token_lists):
            raise ValueError("the fast engine needs prompts of at least 2 tokens; use sweep.engine=naive")
        self.model = model
        self.n = len(token_lists)
        self.layers_path = layers_path
        self.blocks = find_decoder_layers(model, layers_path)
        self.keep, self.letter_positions = _kept_ids(letter_ids)
        self.configs_per_pass = max(1, configs_per_pass)
        self.dtype = next(model.parameters()).dtype
        self.layer_types = _layer_types(model)
        self.tuple_blocks = [False] * len(self.blocks)
        self.prepared: list[_Prepared] = []
        self._unsteered = torch.empty(self.n, len(self.keep))
        with torch.inference_mode():
            for batch in iter_batches(token_lists, batch_size, model_device(model)):
                self._prepare(batch)

    def _prepare(self, batch: EncodedBatch) -> None:
        """Run the prefix once with a cache, then the last token while recording every layer's input."""
        prefix = self.model(
            input_ids=batch.input_ids[:, :-1],
            attention_mask=batch.attention_mask[:, :-1],
            position_ids=batch.position_ids[:, :-1],
            use_cache=True,
            logits_to_keep=1,
        )
        inputs: dict[int, torch.Tensor] = {}

        def make_hook(index: int):  # noqa: ANN202 - returns a forward pre-hook
            def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                inputs[index] = _hidden_argument(args, kwargs)[:, -1, :].clone()

            return hook

        def make_type_hook(index: int):  # noqa: ANN202 - returns a forward hook
            def hook(_module: nn.Module, _args: Any, output: Any) -> None:
                self.tuple_blocks[index] = isinstance(output, tuple)

            return hook

        handles = [
            block.register_forward_pre_hook(make_hook(i), with_kwargs=True) for i, block in enumerate(self.blocks)
        ]
        handles += [block.register_forward_hook(make_type_hook(i)) for i, block in enumerate(self.blocks)]
        try:
            with restricted_lm_head(self.model, self.keep):
                logits = self._run_last(batch, _isolated_cache(prefix.cache), copies=1)
        finally:
            for handle in handles:
                handle.remove()
        self._unsteered[batch.index] = logits[:, 0, :].float().cpu()
        layer_inputs = torch.stack([inputs[i] for i in range(len(self.blocks))])
        self.prepared.append(_Prepared(batch, prefix.cache, layer_inputs))

    def _run_last(self, batch: EncodedBatch, cache: Any, copies: int) -> torch.Tensor:
        """Run ``copies`` stacked copies of the last token against the prefix cache; return ``(B, K, V')``."""
        rows = batch.input_ids.shape[0]
        masks = _last_position_masks(batch.attention_mask, _cached_lengths(cache), self.layer_types, copies, self.dtype)
        return self.model(
            input_ids=batch.input_ids[:, -1:].expand(rows, copies),
            attention_mask=masks,
            position_ids=batch.position_ids[:, -1:].expand(rows, copies),
            cache=cache,
            use_cache=True,
        ).logits

    def unsteered_logits(self) -> torch.Tensor:
        return self._unsteered.clone()

    @contextmanager
    def _start_at(self, layer: int, hidden: torch.Tensor) -> Iterator[None]:
        """Skip blocks before ``layer`` and feed ``hidden`` ``(B, K, H)`` as the input of block ``layer``."""

        def replace_input(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            new = hidden.to(_hidden_argument(args, kwargs).dtype)
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        skipped = list(self.blocks[:layer])
        for index, block in enumerate(skipped):
            block.forward = _tuple_passthrough if self.tuple_blocks[index] else _passthrough  # type: ignore[method-assign]
        handle = self.blocks[layer].register_forward_pre_hook(replace_input, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
            for block in skipped:
                del block.forward

    def _steered_pass(self, prepared: _Prepared, layer: int, site: Site, chunk: torch.Tensor) -> torch.Tensor:
        copies = chunk.shape[0]
        rows = prepared.batch.input_ids.shape[0]
        chunk = chunk.to(prepared.layer_inputs.device)
        with ExitStack() as stack:
            if site == "residual" and layer + 1 < len(self.blocks):
                # The steered block's output is the next block's recorded input, so the pass can
                # start one block later with the vector already added.
                start = add_steering(prepared.layer_inputs[layer + 1].unsqueeze(1), chunk.unsqueeze(0))  # (B, K, H)
                stack.enter_context(self._start_at(layer + 1, start))
            else:
                start = prepared.layer_inputs[layer].unsqueeze(1).expand(rows, copies, -1)
                stack.enter_context(self._start_at(layer, start))
                stack.enter_context(add_at_site(self.model, layer, site, chunk, self.layers_path, positions=copies))
            stack.enter_context(restricted_lm_head(self.model, self.keep))
            return self._run_last(prepared.batch, _isolated_cache(prepared.cache), copies)

    @torch.inference_mode()
    def steered_logits(self, layer: int, site: Site, deltas: torch.Tensor) -> torch.Tensor:
        out = torch.empty(deltas.shape[0], self.n, len(self.keep))
        for start in range(0, deltas.shape[0], self.configs_per_pass):
            chunk = deltas[start : start + self.configs_per_pass]
            for prepared in self.prepared:
                logits = self._steered_pass(prepared, layer, site, chunk)  # (B, K, V')
                out[start : start + chunk.shape[0], prepared.batch.index] = logits.float().cpu().transpose(0, 1)
        return out


ENGINES = ("fast", "naive")


def make_engine(
    name: str,
    model: nn.Module,
    token_lists: Sequence[Sequence[int]],
    batch_size: int,
    letter_ids: list[list[int]],
    layers_path: str | None = None,
    configs_per_pass: int = 64,
) -> Engine:
    """Build the engine named by ``sweep.engine``."""
    if name == "fast":
        return FastEngine(model, token_lists, batch_size, letter_ids, layers_path, configs_per_pass)
    if name == "naive":
        return NaiveEngine(model, token_lists, batch_size, letter_ids, layers_path)
    raise ValueError(f"unknown sweep engine {name!r}; use one of {list(ENGINES)}")
