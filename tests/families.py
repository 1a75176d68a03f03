"""Tiny random models of every supported family, built from configs so tests download nothing.

Each model has hidden size 32, 4 decoder layers and a 300-token vocabulary, which fits the
tokenizer of ``tests.helpers``. Mistral, Qwen3, Gemma 2 and Gemma 3 get a 6-token sliding window,
shorter than the test prompts, so the window really cuts the attention. Qwen3, Gemma 2 and Gemma 3
mix sliding and full attention layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import transformers as tf
from transformers import PreTrainedModel

HIDDEN = 32
LAYERS = 4
VOCAB = 300
WINDOW = 6
_MIXED = ["sliding_attention", "full_attention"] * (LAYERS // 2)


def _common(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    settings.update(overrides)
    return settings


def _gemma3_text_config() -> tf.Gemma3TextConfig:
    return tf.Gemma3TextConfig(**_common(head_dim=8, sliding_window=WINDOW, layer_types=_MIXED))


def _gemma3_multimodal() -> PreTrainedModel:
    vision = tf.SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        image_size=16,
        patch_size=4,
    )
    config = tf.Gemma3Config(
        text_config=_gemma3_text_config(),
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=297,
        eoi_token_index=298,
        image_token_index=299,
    )
    return tf.Gemma3ForConditionalGeneration(config)


def _gpt_neox(parallel: bool) -> PreTrainedModel:
    settings = _common(use_parallel_residual=parallel)
    del settings["num_key_value_heads"]  # GPT-NeoX has no grouped-query attention
    return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**settings))


_BUILDERS: dict[str, Callable[[], PreTrainedModel]] = {
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**_common())),
    "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**_common(sliding_window=WINDOW))),
    "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**_common())),
    "qwen3": lambda: tf.Qwen3ForCausalLM(
        tf.Qwen3Config(**_common(head_dim=8, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=2))
    ),
    "gemma2": lambda: tf.Gemma2ForCausalLM(
        tf.Gemma2Config(**_common(head_dim=8, sliding_window=WINDOW, layer_types=_MIXED))
    ),
    "gemma3": lambda: tf.Gemma3ForCausalLM(_gemma3_text_config()),
    "gemma3_multimodal": _gemma3_multimodal,
    "phi3": lambda: tf.Phi3ForCausalLM(tf.Phi3Config(**_common())),
    "gpt2": lambda: tf.GPT2LMHeadModel(
        tf.GPT2Config(
            vocab_size=VOCAB,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=4,
            n_positions=256,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    ),
    "gpt_neox": lambda: _gpt_neox(parallel=True),
    "gpt_neox_sequential": lambda: _gpt_neox(parallel=False),
    "olmo": lambda: tf.OlmoForCausalLM(tf.OlmoConfig(**_common())),
    "olmo2": lambda: tf.Olmo2ForCausalLM(tf.Olmo2Config(**_common())),
}

FAMILIES: tuple[str, ...] = tuple(_BUILDERS)

# The decoder block class and the child module behind each site; None marks a site the family lacks.
EXPECTED_SITES: dict[str, dict[str, str | None]] = {
    "llama": {
        "block": "LlamaDecoderLayer",
        "attn": "self_attn",
        "mlp": "mlp",
        "post_attn_norm": "post_attention_layernorm",
    },
    "mistral": {
        "block": "MistralDecoderLayer",
        "attn": "self_attn",
        "mlp": "mlp",
        "post_attn_norm": "post_attention_layernorm",
    },
    "qwen2": {
        "block": "Qwen2DecoderLayer",
        "attn": "self_attn",
        "mlp": "mlp",
        "post_attn_norm": "post_attention_layernorm",
    },
    "qwen3": {
        "block": "Qwen3DecoderLayer",
        "attn": "self_attn",
        "mlp": "mlp",
        "post_attn_norm": "post_attention_layernorm",
    },
    "gemma2": {
        "block": "Gemma2DecoderLayer",
        "attn": "self_attn",
        "mlp": "mlp",
        "post_attn_norm": "pre_feedforward_layernorm",
    },
    "gemma3": {
        "block": "Gemma3DecoderLayer",
        "attn": "self_attn",
        "mlp": "mlp",
        "post_attn_norm": "pre_feedforward_layernorm",
    },
    "gemma3_multimodal": {
        "block": "Gemma3DecoderLayer",
        "attn": "self_attn",
        "mlp": "mlp",
        "post_attn_norm": "pre_feedforward_layernorm",
    },
    "phi3": {
        "block": "Phi3DecoderLayer",
        "attn": "self_attn",
        "mlp": "mlp",
        "post_attn_norm": "post_attention_layernorm",
    },
    "gpt2": {"block": "GPT2Block", "attn": "attn", "mlp": "mlp", "post_attn_norm": "ln_2"},
    "gpt_neox": {"block": "GPTNeoXLayer", "attn": "attention", "mlp": "mlp", "post_attn_norm": None},
    "gpt_neox_sequential": {
        "block": "GPTNeoXLayer",
        "attn": "attention",
        "mlp": "mlp",
        "post_attn_norm": "post_attention_layernorm",
    },
    "olmo": {
        "block": "OlmoDecoderLayer",
        "attn": "self_attn",
        "mlp": "mlp",
        "post_attn_norm": "post_attention_layernorm",
    },
    "olmo2": {"block": "Olmo2DecoderLayer", "attn": "self_attn", "mlp": "mlp", "post_attn_norm": None},
}


def tiny_model(family: str, seed: int = 0) -> PreTrainedModel:
    """Build the tiny random model of ``family`` in eval mode."""
    torch.manual_seed(seed)
    return _BUILDERS[family]().eval()
