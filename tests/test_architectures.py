"""Layer and site lookup, hooks and the fast engine on a tiny model of every supported family."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from pas.data.prompts import PromptFormat, render_prompt
from pas.evaluation.scoring import letter_token_ids, scores_from_logits, tokenize
from pas.models.layers import LayerLookupError, available_sites, find_decoder_layers, find_site_module
from pas.steering.engines import FastEngine, NaiveEngine
from pas.steering.hooks import SteeringShapeError, add_at_site, capture_at_site
from tests.families import EXPECTED_SITES, FAMILIES, HIDDEN, LAYERS, VOCAB, tiny_model
from tests.helpers import make_items, tiny_tokenizer

SITES = ("attn", "mlp", "post_attn_norm")


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    """Tokenized prompts of ragged lengths, most of them longer than the sliding window."""
    tokenizer = tiny_tokenizer()
    texts = []
    for k, item in enumerate(make_items(6)):
        prefix = " ".join(["example question and its answer"] * (k % 3)) + "\n"
        texts.append(prefix + render_prompt(item, PromptFormat()))
    return tokenize(tokenizer, texts, add_special_tokens=True)


@pytest.fixture(scope="module")
def letters() -> list[list[int]]:
    return letter_token_ids(tiny_tokenizer(), 3)


def _hidden_states(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states


def _preds(logits: torch.Tensor, positions: list[list[int]]) -> list[int]:
    return [int(s.argmax()) for s in scores_from_logits(logits, positions, [3] * logits.shape[0])]


def _check_fast_equals_naive(model: nn.Module, prompts: list[list[int]], letters: list[list[int]], site: str) -> None:
    # The naive engine runs all prompts in one batch and the fast engine in batches of 4 and 2, so
    # the two also differ in padding.
    naive = NaiveEngine(model, prompts, batch_size=len(prompts), letter_ids=letters)
    fast = FastEngine(model, prompts, batch_size=4, letter_ids=letters, configs_per_pass=2)
    torch.testing.assert_close(fast.unsteered_logits(), naive.unsteered_logits(), rtol=1e-4, atol=1e-5)
    generator = torch.Generator().manual_seed(3)
    for layer in (0, LAYERS - 2, LAYERS - 1):
        deltas = torch.randn(3, HIDDEN, generator=generator) * torch.tensor([0.0, 4.0, 32.0]).unsqueeze(1)
        reference = naive.steered_logits(layer, site, deltas)  # type: ignore[arg-type]
        got = fast.steered_logits(layer, site, deltas)  # type: ignore[arg-type]
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)
        for k in range(3):
            assert _preds(got[k], fast.letter_positions) == _preds(reference[k], naive.letter_positions)


@pytest.mark.parametrize("family", FAMILIES)
def test_lookup_finds_blocks_and_sites(family: str) -> None:
    model = tiny_model(family)
    expected = EXPECTED_SITES[family]
    blocks = find_decoder_layers(model)
    assert len(blocks) == LAYERS
    assert type(blocks[0]).__name__ == expected["block"]
    assert find_site_module(model, 1, "residual") is blocks[1]
    for site in SITES:
        child = expected[site]
        if child is None:
            with pytest.raises(LayerLookupError, match=f"site '{site}' does not exist in {model.config.model_type}"):
                find_site_module(model, 1, site)  # type: ignore[arg-type]
        else:
            assert find_site_module(model, 1, site) is getattr(blocks[1], child)  # type: ignore[arg-type]
    assert available_sites(model) == ["residual", *(site for site in SITES if expected[site] is not None)]


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_capture_equals_hidden_states(family: str) -> None:
    model = tiny_model(family)
    ids = torch.randint(3, VOCAB - 3, (2, 9))
    store: dict[int, list[torch.Tensor]] = {}
    layers = list(range(LAYERS - 1))  # the last entry of hidden_states has the final norm applied
    with capture_at_site(model, layers, "residual", store):
        hidden = _hidden_states(model, ids)
    for layer in layers:
        assert torch.equal(store[layer][0], hidden[layer + 1][:, -1])


@pytest.mark.parametrize("family", FAMILIES)
def test_hook_adds_exactly_strength_times_vector(family: str) -> None:
    model = tiny_model(family)
    ids = torch.randint(3, VOCAB - 3, (2, 9))
    vector = torch.randn(HIDDEN)
    strength, layer = 2.5, 1
    base = _hidden_states(model, ids)
    with add_at_site(model, layer, "residual", strength * vector):
        steered = _hidden_states(model, ids)
    for k in range(layer + 1):
        assert torch.equal(steered[k], base[k])
    expected = base[layer + 1].clone()
    expected[:, -1] += strength * vector
    torch.testing.assert_close(steered[layer + 1], expected, rtol=0, atol=1e-6)
    for k in range(layer + 2, len(base)):
        torch.testing.assert_close(steered[k][:, :-1], base[k][:, :-1], rtol=0, atol=1e-6)

    # At a child site the hooked module's own output moves by exactly strength * v at the last position.
    unsteered: dict[int, list[torch.Tensor]] = {}
    with capture_at_site(model, [layer], "mlp", unsteered):
        _hidden_states(model, ids)
    moved: dict[int, list[torch.Tensor]] = {}
    with add_at_site(model, layer, "mlp", strength * vector), capture_at_site(model, [layer], "mlp", moved):
        _hidden_states(model, ids)
    torch.testing.assert_close(moved[layer][0], unsteered[layer][0] + strength * vector, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_strength_gives_identical_logits(family: str) -> None:
    model = tiny_model(family)
    ids = torch.randint(3, VOCAB - 3, (2, 8))
    with torch.no_grad():
        base = model(input_ids=ids).logits
        for site in available_sites(model):
            with add_at_site(model, 2, site, 0.0 * torch.randn(HIDDEN)):  # type: ignore[arg-type]
                assert torch.equal(model(input_ids=ids).logits, base)


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_engine_equals_naive(family: str, prompts: list[list[int]], letters: list[list[int]]) -> None:
    model = tiny_model(family)
    for site in ("residual", "mlp"):
        _check_fast_equals_naive(model, prompts, letters, site)


@pytest.mark.parametrize("family", ["gemma2", "gpt2", "gpt_neox_sequential"])
def test_fast_engine_other_sites(family: str, prompts: list[list[int]], letters: list[list[int]]) -> None:
    model = tiny_model(family)
    for site in ("attn", "post_attn_norm"):
        _check_fast_equals_naive(model, prompts, letters, site)


@pytest.mark.parametrize(("family", "targets"), [("mistral", ["q_proj", "v_proj"]), ("gpt_neox", ["query_key_value"])])
def test_peft_wrapped_model(
    family: str, targets: list[str], prompts: list[list[int]], letters: list[list[int]]
) -> None:
    base = tiny_model(family)
    # init_lora_weights=False makes the adapter change the outputs, so the test covers a live adapter.
    config = LoraConfig(r=2, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM")
    wrapped = get_peft_model(base, config).eval()
    blocks = find_decoder_layers(wrapped)
    assert blocks is find_decoder_layers(base)
    assert find_site_module(wrapped, 1, "mlp") is blocks[1].mlp
    assert find_decoder_layers(wrapped, "model.layers" if family == "mistral" else "gpt_neox.layers") is blocks
    ids = torch.randint(3, VOCAB - 3, (1, 7))
    store: dict[int, list[torch.Tensor]] = {}
    with capture_at_site(wrapped, [1], "residual", store):
        hidden = _hidden_states(wrapped, ids)
    assert torch.equal(store[1][0], hidden[2][:, -1])
    for site in ("residual", "mlp"):
        _check_fast_equals_naive(wrapped, prompts, letters, site)


def test_multimodal_gemma3_steers_the_text_layers() -> None:
    model = tiny_model("gemma3_multimodal")
    assert find_decoder_layers(model) is model.model.language_model.layers
    vision_layers = model.model.vision_tower.encoder.layers
    assert len(vision_layers) == LAYERS  # same length as the text layers, so only the path decides


def test_wrong_vector_length_is_rejected() -> None:
    model = tiny_model("llama")
    wrong = torch.ones(HIDDEN + 1)
    with (
        pytest.raises(SteeringShapeError, match=r"the last dimension must be 32, the model's hidden size"),
        add_at_site(model, 0, "residual", wrong),
    ):
        pass


class _TupleBlock(nn.Module):
    """A decoder block that returns ``(hidden_states, attention_weights)``, like older transformers code."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.Linear(HIDDEN, HIDDEN)
        self.mlp = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, None]:
        hidden = hidden + self.self_attn(hidden)
        return hidden + self.mlp(hidden), None


class _TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.blocks = nn.ModuleList(_TupleBlock() for _ in range(3))

    def forward(self, ids: torch.Tensor) -> list[torch.Tensor]:
        outputs = [self.embed(ids)]
        for block in self.blocks:
            outputs.append(block(outputs[-1])[0])
        return outputs


def test_hooks_on_blocks_that_return_tuples() -> None:
    torch.manual_seed(0)
    model = _TupleModel().eval()
    ids = torch.randint(0, VOCAB, (2, 5))
    assert find_decoder_layers(model) is model.blocks  # found by structure, without a config
    vector = torch.randn(HIDDEN)
    with torch.no_grad():
        base = model(ids)
        store: dict[int, list[torch.Tensor]] = {}
        with add_at_site(model, 1, "residual", vector), capture_at_site(model, [1], "residual", store):
            steered = model(ids)
    assert torch.equal(steered[1], base[1])
    expected = base[2].clone()
    expected[:, -1] += vector
    torch.testing.assert_close(steered[2], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(store[1][0], expected[:, -1], rtol=0, atol=0)


def test_unknown_architecture_names_layers_path() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stack = nn.ModuleList(nn.Linear(2, 2) for _ in range(2))

    with pytest.raises(LayerLookupError, match=r"Set model\.layers_path .*ModuleLists in this model.*stack \(2\)"):
        find_decoder_layers(Odd())


class _Config:
    num_hidden_layers = 2


def test_lookup_falls_back_to_list_length() -> None:
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = _Config()
            self.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(2))
            self.heads = nn.ModuleList(nn.Linear(2, 2) for _ in range(3))

    model = Plain()
    assert find_decoder_layers(model) is model.blocks


def test_lookup_rejects_ambiguous_lists() -> None:
    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left = nn.ModuleList(_TupleBlock() for _ in range(2))
            self.right = nn.ModuleList(_TupleBlock() for _ in range(2))

    with pytest.raises(LayerLookupError, match=r"equally likely: \['left', 'right'\]"):
        find_decoder_layers(Twin())
