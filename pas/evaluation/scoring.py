"""Batched letter scoring: left-padded batches and the next-token logits of each answer letter."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pas.data.schema import LETTERS
from pas.errors import UserError


class ScoringError(UserError, ValueError):
    """The tokenizer or the prompts cannot be scored as multiple-choice answers."""


def letter_token_ids(tokenizer: Any, n_letters: int) -> list[list[int]]:
    """Return, per letter, the single-token ids of ``"A"`` and ``" A"`` that the tokenizer produces.

    After an answer cue such as ``"Answer:"`` many tokenizers emit the letter with a leading space,
    and after a chat template's assistant prompt without one, so both variants count.
    """
    ids: list[list[int]] = []
    for letter in LETTERS[:n_letters]:
        variants: list[int] = []
        for text in (letter, " " + letter):
            encoded = tokenizer.encode(text, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] not in variants:
                variants.append(encoded[0])
        if not variants:
            raise ScoringError(
                f"the tokenizer splits the answer letter {letter!r} into several tokens with and "
                "without a leading space, so letters cannot be scored from one next-token logit"
            )
        ids.append(variants)
    owners: dict[int, str] = {}
    for letter, variants in zip(LETTERS, ids):
        for token in variants:
            if token in owners:
                raise ScoringError(f"letters {owners[token]!r} and {letter!r} share the token id {token}")
            owners[token] = letter
    return ids


@dataclass
class EncodedBatch:
    """A left-padded batch; ``index`` maps each row back to its position in the input list."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    index: list[int]


def tokenize(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    """Tokenize each text on its own, without padding or truncation."""
    encoded = tokenizer(list(texts), add_special_tokens=add_special_tokens, padding=False, truncation=False)
    return [list(ids) for ids in encoded["input_ids"]]


def left_pad(token_lists: Sequence[Sequence[int]], index: list[int], device: torch.device) -> EncodedBatch:
    """Pad on the left, so the last column is the last real token of every row.

    Position ids count real tokens only, which keeps models with absolute position embeddings
    (GPT-2) identical between batched and unbatched runs.
    """
    width = max(len(ids) for ids in token_lists)
    input_ids = torch.zeros(len(token_lists), width, dtype=torch.long)
    mask = torch.zeros(len(token_lists), width, dtype=torch.long)
    for row, ids in enumerate(token_lists):
        if len(ids) == 0:
            raise ScoringError(f"prompt {index[row]} tokenizes to no tokens")
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return EncodedBatch(input_ids.to(device), mask.to(device), positions.to(device), index)


def length_batches(token_lists: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Group indices into batches of similar length (longest first) to keep padding small."""
    if batch_size < 1:
        raise ScoringError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(token_lists)), key=lambda i: (-len(token_lists[i]), i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def iter_batches(token_lists: Sequence[Sequence[int]], batch_size: int, device: torch.device) -> Iterator[EncodedBatch]:
    for index in length_batches(token_lists, batch_size):
        yield left_pad([token_lists[i] for i in index], index, device)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def last_position_logits(model: nn.Module, batch: EncodedBatch) -> torch.Tensor:
    """Run one full forward pass over a left-padded batch and return the last position's logits ``(B, V)``."""
    return model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=1,
    ).logits[:, -1, :]


def scores_from_logits(
    logits: torch.Tensor, letter_ids: list[list[int]], n_choices: Sequence[int]
) -> list[torch.Tensor]:
    """Turn last-position logits ``(B, V)`` into per-row log-probabilities over the valid letters.

    A letter's score is the log-sum-exp of the logits of its token variants; the softmax over the
    row's letters makes the scores comparable across rows. Only letters of the row's own choices
    compete, so a 3-choice item can never be predicted as ``D``.
    """
    logits = logits.float()
    rows = []
    for row, n in enumerate(n_choices):
        per_letter = torch.stack([torch.logsumexp(logits[row, ids], dim=0) for ids in letter_ids[:n]])
        rows.append(torch.log_softmax(per_letter, dim=0).cpu())
    return rows


@dataclass
class LetterPredictions:
    """Per-item letter log-probabilities and the predicted choice index."""

    scores: list[torch.Tensor]
    pred: list[int]

    @classmethod
    def from_scores(cls, scores: list[torch.Tensor]) -> LetterPredictions:
        return cls(scores=scores, pred=[int(row.argmax()) for row in scores])

    def correct(self, targets: Sequence[int]) -> list[bool]:
        return [p == t for p, t in zip(self.pred, targets)]

    def accuracy(self, targets: Sequence[int]) -> float:
        hits = self.correct(targets)
        return sum(hits) / len(hits) if hits else float("nan")


SteerFactory = Callable[[], AbstractContextManager[Any]]


@torch.inference_mode()
def last_logits_full(
    model: nn.Module,
    token_lists: Sequence[Sequence[int]],
    batch_size: int,
    context: SteerFactory | None = None,
) -> torch.Tensor:
    """Run full forward passes and return the last-position logits ``(N, V)`` in input order.

    ``context`` builds a context manager (a steering or capture hook) entered around each batch.
    """
    device = model_device(model)
    out: list[torch.Tensor | None] = [None] * len(token_lists)
    for batch in iter_batches(token_lists, batch_size, device):
        with context() if context else nullcontext():
            logits = last_position_logits(model, batch)
        for row, i in enumerate(batch.index):
            out[i] = logits[row].float()
    return torch.stack(out)  # type: ignore[arg-type]


def letter_score_matrix(logits: torch.Tensor, letter_ids: list[list[int]], n_choices: Sequence[int]) -> torch.Tensor:
    """Return differentiable letter scores ``(B, max(n_choices))`` from last-position logits ``(B, V)``.

    Entry ``[b, k]`` is the log-sum-exp of letter ``k``'s token-variant logits. Letters beyond a
    row's own choices get ``-inf``, so a cross-entropy over the row only counts its choices.
    """
    width = max(n_choices)
    per_letter = torch.stack([torch.logsumexp(logits[:, ids], dim=-1) for ids in letter_ids[:width]], dim=-1)
    valid = torch.arange(width, device=logits.device).unsqueeze(0) < torch.tensor(
        n_choices, device=logits.device
    ).unsqueeze(1)
    return per_letter.masked_fill(~valid, float("-inf"))


def forward_letter_scores(
    model: nn.Module, token_lists: Sequence[Sequence[int]], letter_ids: list[list[int]], n_choices: Sequence[int]
) -> torch.Tensor:
    """Run one left-padded batch (with gradients, if enabled) and return its letter scores ``(B, max_n)``."""
    batch = left_pad(token_lists, list(range(len(token_lists))), model_device(model))
    logits = last_position_logits(model, batch)
    return letter_score_matrix(logits.float(), letter_ids, n_choices)
