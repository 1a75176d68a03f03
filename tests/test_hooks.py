from __future__ import annotations

import pytest
import torch

from pas.steering.hooks import add_at_site, capture_at_site
from tests.helpers import TINY_MODELS


@pytest.fixture(params=sorted(TINY_MODELS))
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return TINY_MODELS[request.param]()


def _hidden(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_hook_adds_exactly_at_layer_and_last_position(model: torch.nn.Module, layer: int) -> None:
    ids = torch.randint(3, 300, (2, 9))
    vector = torch.randn(32)
    strength = 2.5
    base = _hidden(model, ids)
    with add_at_site(model, layer, "residual", strength * vector):
        steered = _hidden(model, ids)
    # hidden_states[k + 1] is the output of block k; blocks before the steered one are untouched.
    for k in range(layer + 1):
        assert torch.equal(steered[k], base[k])
    expected = base[layer + 1].clone()
    expected[:, -1] += strength * vector
    torch.testing.assert_close(steered[layer + 1], expected, rtol=0, atol=1e-6)
    # Causal attention: every earlier position is unchanged in every later layer too.
    for k in range(layer + 2, len(base)):
        torch.testing.assert_close(steered[k][:, :-1], base[k][:, :-1], rtol=0, atol=1e-6)
        assert not torch.allclose(steered[k][:, -1], base[k][:, -1])


def test_hook_changes_last_layer_output(model: torch.nn.Module) -> None:
    ids = torch.randint(3, 300, (1, 5))
    last = model.config.num_hidden_layers - 1
    store: dict[int, list[torch.Tensor]] = {}
    vector = torch.randn(32)
    # The capture hook is registered first; the steering hook still runs before it.
    with capture_at_site(model, [last], "residual", store):
        _hidden(model, ids)
        with add_at_site(model, last, "residual", vector):
            _hidden(model, ids)
    torch.testing.assert_close(store[last][1], store[last][0] + vector, rtol=0, atol=1e-6)


@pytest.mark.parametrize("layer", [0, 2])
def test_capture_reads_block_output(model: torch.nn.Module, layer: int) -> None:
    ids = torch.randint(3, 300, (3, 6))
    store: dict[int, list[torch.Tensor]] = {}
    with capture_at_site(model, [layer], "residual", store):
        hidden = _hidden(model, ids)
    torch.testing.assert_close(store[layer][0], hidden[layer + 1][:, -1], rtol=0, atol=0)


def test_capture_and_steer_use_the_same_module(model: torch.nn.Module) -> None:
    ids = torch.randint(3, 300, (2, 7))
    vector = torch.randn(32)
    store: dict[int, list[torch.Tensor]] = {}
    with add_at_site(model, 1, "residual", vector), capture_at_site(model, [1], "residual", store):
        _hidden(model, ids)
    unsteered: dict[int, list[torch.Tensor]] = {}
    with capture_at_site(model, [1], "residual", unsteered):
        _hidden(model, ids)
    # The capture hook runs after the steering hook on the same module, so it sees h + v.
    torch.testing.assert_close(store[1][0], unsteered[1][0] + vector, rtol=0, atol=1e-6)


def test_hook_removed_after_error(model: torch.nn.Module) -> None:
    ids = torch.randint(3, 300, (1, 4))
    base = _hidden(model, ids)[-1]
    hooks_before = [len(m._forward_hooks) for m in model.modules()]
    with pytest.raises(RuntimeError, match="boom"), add_at_site(model, 0, "residual", torch.ones(32)):
        raise RuntimeError("boom")
    assert torch.equal(_hidden(model, ids)[-1], base)
    assert [len(m._forward_hooks) for m in model.modules()] == hooks_before


def test_zero_strength_leaves_logits_identical(model: torch.nn.Module) -> None:
    ids = torch.randint(3, 300, (2, 8))
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with add_at_site(model, 1, "residual", 0.0 * torch.randn(32)):
            steered = model(input_ids=ids).logits
    assert torch.equal(base, steered)
