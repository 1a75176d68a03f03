"""Tiny random models and tokenizers built in memory, so unit tests download nothing."""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from pas.data.schema import MCItem

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = [
    "Question: which answer is right? A: yes B: no C: maybe D: unknown E: never Answer: A B C D E",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "Respond with a single letter. Answer: " + " ".join(string.ascii_uppercase[:8]),
]


def tiny_tokenizer(padding_side: str = "left") -> PreTrainedTokenizerFast:
    """Return a byte-level BPE tokenizer with 300 tokens trained on a few sentences."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_CORPUS * 10, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    wrapped.padding_side = padding_side
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def tiny_llama(vocab_size: int = 300, layers: int = 4, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int = 300, layers: int = 4, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=layers,
        n_head=4,
        n_positions=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return GPT2LMHeadModel(config).eval()


TINY_MODELS = {"llama": tiny_llama, "gpt2": tiny_gpt2}


def make_items(n: int, n_choices: int = 3, seed: int = 0) -> list[MCItem]:
    """Return ``n`` items with questions of varied lengths and targets spread over the choices."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "cat", "sleeps", "sun"]
    items = []
    for i in range(n):
        length = 2 + (i * 7 + seed) % 11
        question = " ".join(words[(i + k) % len(words)] for k in range(length)) + "?"
        choices = tuple(f"{words[(i + c) % len(words)]} {c}" for c in range(n_choices))
        items.append(MCItem(id=f"q{i:03d}", question=question, choices=choices, target=(i * 5 + seed) % n_choices))
    return items
