"""Prompt rendering: lettered choices, a per-item deterministic shuffle and the answer cue."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pas.data.schema import LETTERS, MCItem
from pas.data.truncation import fit_to_limit

log = logging.getLogger(__name__)
MAX_TRUNCATION_WARNINGS = 5


@dataclass(frozen=True)
class PromptFormat:
    """How an item becomes text.

    The multiple-choice prompt is ``context``, ``question``, one ``"<letter>: <choice>"`` line per
    choice, ``instruction`` and ``answer_cue``. With ``chat_template`` the same body (without the
    answer cue) becomes the user turn of the tokenizer's chat template, followed by the
    assistant's generation prompt.
    """

    instruction: str = "Respond with a single letter."
    answer_cue: str = "Answer:"
    chat_template: bool = False
    system_prompt: str | None = None
    # At most this many tokens per text; None uses the model's context length (see pas.data.truncation).
    max_tokens: int | None = None


def item_seed(seed: int, item_id: str) -> int:
    """Derive a stable 64-bit seed from the run seed and the item id (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(f"{seed}\x00{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def shuffle_choices(item: MCItem, seed: int) -> MCItem:
    """Return the item with its choices permuted by a generator seeded from ``seed`` and the item id.

    Each item gets its own permutation, so a dataset whose target is always listed first does not
    end up with a constant correct letter. The original position of every choice is kept in
    ``meta["original_order"]``.
    """
    order = list(range(item.n_choices))
    random.Random(item_seed(seed, item.id)).shuffle(order)
    choices = tuple(item.choices[i] for i in order)
    meta = {**item.meta, "original_order": order}
    return dataclasses.replace(item, choices=choices, target=order.index(item.target), meta=meta)


def _question_block(item: MCItem) -> str:
    return f"{item.context}\n{item.question}" if item.context else item.question


def render_body(item: MCItem, fmt: PromptFormat) -> str:
    """Render context, question, lettered choices and the instruction, without the answer cue."""
    lines = [_question_block(item)]
    lines += [f"{LETTERS[i]}: {choice}" for i, choice in enumerate(item.choices)]
    if fmt.instruction:
        lines.append(fmt.instruction)
    return "\n".join(lines)


def _chat(tokenizer: Any, fmt: PromptFormat, user: str, assistant: str | None) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "prompt.chat_template=true but the tokenizer has no chat template; "
            "set prompt.chat_template=false or use an instruction-tuned model"
        )
    messages = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
    messages.append({"role": "user", "content": user})
    if assistant is None:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # The answer text is appended after the generation prompt, not closed as a finished turn,
    # so its last token is the answer's own last token rather than an end-of-turn marker.
    prefix = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prefix + assistant


def render_prompt(item: MCItem, fmt: PromptFormat, tokenizer: Any = None) -> str:
    """Render the multiple-choice prompt whose next-token letter logits decide the answer."""
    body = render_body(item, fmt)
    if fmt.chat_template:
        return _chat(tokenizer, fmt, body, None)
    return f"{body}\n{fmt.answer_cue}" if fmt.answer_cue else body


def render_completion(user: str, completion: str, fmt: PromptFormat, tokenizer: Any = None) -> str:
    """Render a free text followed by a completion: the user turn and the start of the answer under a chat template."""
    if fmt.chat_template:
        return _chat(tokenizer, fmt, user, completion)
    return user + completion


def render_answer(item: MCItem, choice: int, fmt: PromptFormat, tokenizer: Any = None) -> str:
    """Render "question + answer text" for the introspective PAS variants (no lettered choices)."""
    question = _question_block(item)
    answer = item.choices[choice]
    if fmt.chat_template:
        return _chat(tokenizer, fmt, question, answer)
    return f"{question}\n{fmt.answer_cue} {answer}" if fmt.answer_cue else f"{question}\n{answer}"


class PromptBuilder:
    """Renders the texts of one run: multiple-choice prompts and "question + answer" texts.

    Holds the format and the tokenizer, so every stage (fitting, sweep, test, fine-tuning) renders
    items the same way. Subclasses change the prompt, for example by prepending exemplars.
    """

    def __init__(self, fmt: PromptFormat, tokenizer: Any = None, context_length: int | None = None) -> None:
        self.fmt = fmt
        self.tokenizer = tokenizer
        limits = [n for n in (fmt.max_tokens, context_length) if n is not None]
        # Texts longer than this are cut by the policy in pas.data.truncation; None: never cut.
        self.token_limit = min(limits) if limits and tokenizer is not None else None
        self.truncated: set[str] = set()

    @property
    def add_special_tokens(self) -> bool:
        # A chat template writes its own special tokens into the text.
        return not self.fmt.chat_template

    def prompt(self, item: MCItem) -> str:
        return self._fit(item, lambda it: render_prompt(it, self.fmt, self.tokenizer))

    def answer(self, item: MCItem, choice: int) -> str:
        return self._fit(item, lambda it: render_answer(it, choice, self.fmt, self.tokenizer))

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"])

    def _fit(self, item: MCItem, render: Callable[[MCItem], str]) -> str:
        if self.token_limit is None:
            return render(item)
        text, cut = fit_to_limit(item, render, self._count_tokens, self.tokenizer, self.token_limit)
        if cut and item.id not in self.truncated:
            self.truncated.add(item.id)
            if len(self.truncated) <= MAX_TRUNCATION_WARNINGS:
                log.warning(
                    "Item %r is longer than %d tokens; the start of its question and context was cut",
                    item.id,
                    self.token_limit,
                )
        return text

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Tokenize texts one by one, without padding or truncation."""
        encoded = self.tokenizer(texts, add_special_tokens=self.add_special_tokens, padding=False, truncation=False)
        return [list(ids) for ids in encoded["input_ids"]]

    def encode_prompts(self, items: list[MCItem]) -> list[list[int]]:
        return self.encode([self.prompt(item) for item in items])
