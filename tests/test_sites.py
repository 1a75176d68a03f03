"""Every steering site reads and writes the output of the module it is named after, in every family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pas.models.layers import SITES, available_sites, find_decoder_layers
from pas.pipeline import run
from pas.steering.hooks import add_at_site, capture_at_site
from pas.steering.vector import SteeringVector
from tests.families import EXPECTED_SITES, FAMILIES, HIDDEN, VOCAB, tiny_model
from tests.test_train import _compose, _overrides, _save_model, _write_task

LAYER = 1


def _expected_module(model: nn.Module, family: str, site: str) -> nn.Module:
    """Name the module by hand from the family table, independently of the package's lookup."""
    block = find_decoder_layers(model)[LAYER]
    return block if site == "residual" else getattr(block, EXPECTED_SITES[family][site])


def _record_output(module: nn.Module, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Run the model and return ``module``'s main output at the last position, ``(B, H)``."""
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        main = output[0] if isinstance(output, tuple) else output
        seen.append(main[:, -1].detach().clone())

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_sites_read_and_write_named_module(family: str) -> None:
    model = tiny_model(family)
    ids = torch.randint(3, VOCAB - 3, (2, 9), generator=torch.Generator().manual_seed(0))
    delta = torch.randn(HIDDEN, generator=torch.Generator().manual_seed(1))
    sites = available_sites(model)
    assert sites == [s for s in SITES if s == "residual" or EXPECTED_SITES[family][s] is not None]
    for site in sites:
        module = _expected_module(model, family, site)
        plain = _record_output(module, model, ids)

        # Reading: the captured activation is that module's output at the last position.
        store: dict[int, list[torch.Tensor]] = {}
        with capture_at_site(model, [LAYER], site, store), torch.no_grad():  # type: ignore[arg-type]
            model(input_ids=ids)
        torch.testing.assert_close(store[LAYER][0], plain.float(), rtol=0, atol=0, msg=f"{family} {site} read")

        # Writing: the same module's output moves by exactly delta, and the capture records the move.
        store = {}
        with add_at_site(model, LAYER, site, delta), capture_at_site(model, [LAYER], site, store):  # type: ignore[arg-type]
            steered = _record_output(module, model, ids)
        torch.testing.assert_close(steered, plain + delta, rtol=0, atol=1e-6, msg=f"{family} {site} write")
        torch.testing.assert_close(store[LAYER][0], plain + delta, rtol=0, atol=1e-6, msg=f"{family} {site} both")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_residual_site_is_next_hidden_state(family: str) -> None:
    model = tiny_model(family)
    ids = torch.randint(3, VOCAB - 3, (1, 7), generator=torch.Generator().manual_seed(2))
    store: dict[int, list[torch.Tensor]] = {}
    with capture_at_site(model, [LAYER], "residual", store), torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.equal(store[LAYER][0], hidden[LAYER + 1][:, -1])


def test_site_comparison_runs(tmp_path: Path) -> None:
    model_dir = _save_model(tmp_path / "model")
    task = _write_task(tmp_path / "items.jsonl", 30)
    vectors = {}
    for site in SITES:
        out = tmp_path / site
        results = run(_compose(_overrides(model_dir, task, out, f"method.site={site}", "method.variants=[ipas_all]")))
        assert results["site"] == site
        record = results["methods"]["ipas_all"]
        vector = SteeringVector.load(out / record["vector_file"], expected_hidden_size=32)
        assert vector.site == site
        vectors[site] = vector.vector
    # Each site reads a different activation, so each fits a different vector.
    for first in SITES:
        for second in SITES:
            if first < second:
                assert not torch.allclose(vectors[first], vectors[second]), (first, second)
