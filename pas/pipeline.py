"""The PAS run: load, fit vectors with the Lightning Trainer, sweep on validation, test, write artifacts."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

import pas
from pas.config import auto_layers, call_target, validate_run_config
from pas.data.datamodule import PASDataModule
from pas.data.prompts import PromptFormat, render_prompt
from pas.data.schema import MCItem
from pas.evaluation.metrics import count_flips
from pas.evaluation.scoring import LetterPredictions, letter_token_ids, tokenize
from pas.io import atomic_write_json, atomic_write_text
from pas.models.loading import LoadedModel
from pas.report.artifacts import summary_table, write_heatmap, write_predictions_csv
from pas.steering.engines import Engine, make_engine
from pas.steering.module import PASFitModule
from pas.steering.sweep import check_grid, predictions_from_logits, run_sweep, steered_predictions
from pas.steering.vector import SteeringVector

log = logging.getLogger(__name__)


@dataclass
class Timer:
    """Wall-clock seconds per named phase."""

    seconds: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str, start: float) -> None:
        self.seconds[name] = round(time.perf_counter() - start, 3)


def make_logger(cfg: DictConfig) -> Any:
    if not cfg.get("logger"):
        return False
    return call_target(cfg.logger)


def encode_prompts(loaded: LoadedModel, items: Sequence[MCItem], fmt: PromptFormat) -> list[list[int]]:
    texts = [render_prompt(item, fmt, loaded.tokenizer) for item in items]
    return tokenize(loaded.tokenizer, texts, add_special_tokens=not fmt.chat_template)


def predict(engine: Engine, items: Sequence[MCItem]) -> LetterPredictions:
    return predictions_from_logits(engine.unsteered_logits(), engine, [item.n_choices for item in items])


def fit_vectors(
    cfg: DictConfig,
    loaded: LoadedModel,
    dm: PASDataModule,
    fmt: PromptFormat,
    layers: list[int],
    letter_ids: list[list[int]],
    logger: Any,
) -> PASFitModule:
    """Fit every variant's vectors at every grid layer in one epoch of ``Trainer.fit``."""
    module = PASFitModule(
        loaded.model,
        loaded.tokenizer,
        fmt,
        layers,
        cfg.method.site,
        list(cfg.method.variants),
        letter_ids,
        cfg.data.batch_size,
        cfg.model.get("layers_path"),
    )
    trainer = call_target(cfg.trainer, logger=logger)
    trainer.fit(module, datamodule=dm)
    return module


def method_record(
    variant: str,
    sweep: Any,
    test_items: Sequence[MCItem],
    unsteered_val_acc: float,
    base_test: LetterPredictions,
    steered_test: LetterPredictions,
    counts: dict[str, int],
) -> dict[str, Any]:
    targets = [item.target for item in test_items]
    flips = count_flips(base_test.pred, steered_test.pred, targets)
    test_acc = steered_test.accuracy(targets)
    unsteered_test = base_test.accuracy(targets)
    return {
        "layer": sweep.best_layer,
        "strength": sweep.best_strength,
        "val_acc": sweep.best_val_acc,
        "unsteered_val_acc": unsteered_val_acc,
        "test_acc": test_acc,
        "unsteered_test_acc": unsteered_test,
        "effect": test_acc - unsteered_test,
        "flips": {"r2w": flips.r2w, "w2r": flips.w2r},
        "train_counts": counts,
        "grid": {
            "layers": sweep.layers,
            "strengths": sweep.strengths,
            "val_acc": [[round(float(a), 6) for a in row] for row in sweep.val_acc],
        },
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one task end to end and return the contents of ``results.json``."""
    start = time.perf_counter()
    timer = Timer()
    validate_run_config(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    t = time.perf_counter()
    dm = PASDataModule(
        lambda: call_target(cfg.task.loader),
        task=cfg.task.name,
        seed=cfg.seed,
        max_sample_size=cfg.data.max_sample_size,
        fractions=tuple(cfg.data.split),
        batch_size=cfg.data.batch_size,
        shuffle_choices=cfg.data.shuffle_choices,
    )
    dm.setup()
    splits = dm.splits
    timer.phase("load_data", t)

    t = time.perf_counter()
    loaded: LoadedModel = call_target(cfg.model.load)
    timer.phase("load_model", t)
    layers = list(cfg.method.layers) if cfg.method.layers is not None else auto_layers(loaded.num_layers)
    strengths = [float(s) for s in cfg.method.strengths]
    check_grid(layers, strengths, loaded.num_layers)
    fmt = PromptFormat(**cfg.prompt)
    max_choices = max(item.n_choices for name in ("train", "val", "test") for item in splits[name])
    letter_ids = letter_token_ids(loaded.tokenizer, max_choices)
    logger = make_logger(cfg)

    t = time.perf_counter()
    module = fit_vectors(cfg, loaded, dm, fmt, layers, letter_ids, logger)
    vectors = module.vector_table()
    timer.phase("fit", t)

    t = time.perf_counter()
    layers_path = cfg.model.get("layers_path")

    def engine_for(items: Sequence[MCItem]) -> Engine:
        lists = encode_prompts(loaded, items, fmt)
        return make_engine(
            cfg.sweep.engine,
            loaded.model,
            lists,
            cfg.sweep.batch_size,
            letter_ids,
            layers_path,
            cfg.sweep.configs_per_pass,
        )

    val_engine = engine_for(splits.val)
    base_val = predict(val_engine, splits.val)
    val_targets = [item.target for item in splits.val]
    val_choices = [item.n_choices for item in splits.val]

    def log_config(variant: str, layer: int, strength: float, acc: float) -> None:
        if logger:
            logger.log_metrics({f"sweep/{variant}/val_acc": acc, "sweep/layer": layer, "sweep/strength": strength})

    sweeps = run_sweep(val_engine, vectors, layers, strengths, cfg.method.site, val_targets, val_choices, log_config)
    del val_engine
    timer.phase("sweep", t)

    t = time.perf_counter()
    test_engine = engine_for(splits.test)
    base_test = predict(test_engine, splits.test)
    test_choices = [item.n_choices for item in splits.test]
    methods: dict[str, dict[str, Any]] = {}
    counts = module.counts()
    for variant, sweep in sweeps.items():
        row = layers.index(sweep.best_layer)
        steered = steered_predictions(
            test_engine, vectors[variant][row], sweep.best_layer, cfg.method.site, sweep.best_strength, test_choices
        )
        record = method_record(
            variant, sweep, splits.test, base_val.accuracy(val_targets), base_test, steered, counts[variant]
        )
        methods[variant] = record
        write_predictions_csv(out_dir / "predictions" / f"{variant}.csv", splits.test, base_test.pred, steered.pred)
        title = f"{cfg.task.name} {variant}"
        write_heatmap(out_dir / "heatmaps" / f"{variant}.png", sweep, record["unsteered_val_acc"], title)
        vector = SteeringVector(
            vector=vectors[variant][row],
            layer=sweep.best_layer,
            site=cfg.method.site,
            strength=sweep.best_strength,
            method=variant,
            metadata={
                "model_name": loaded.name,
                "model_revision": loaded.revision,
                "task": cfg.task.name,
                "seed": cfg.seed,
                "train_counts": counts[variant],
            },
        )
        record["vector_file"] = str(vector.save(out_dir / "vectors" / variant).relative_to(out_dir))
    timer.phase("test", t)
    timer.seconds["total"] = round(time.perf_counter() - start, 3)

    train_records = module.train_records
    results = {
        "status": "ok",
        "task": cfg.task.name,
        "task_group": cfg.task.get("group"),
        "target_behavior": cfg.task.get("target_behavior"),
        "model": loaded.name,
        "model_revision": loaded.revision,
        "seed": cfg.seed,
        "package_version": pas.__version__,
        "site": cfg.method.site,
        "sweep_engine": cfg.sweep.engine,
        "splits": splits.sizes(),
        "correct_letters": dm.letter_distribution(),
        "unsteered": {
            "train_acc": sum(r["pred"] == r["target"] for r in train_records) / max(len(train_records), 1),
            "val_acc": base_val.accuracy(val_targets),
            "test_acc": base_test.accuracy([item.target for item in splits.test]),
        },
        "methods": methods,
        "timings_s": timer.seconds,
    }
    atomic_write_json(out_dir / "results.json", results)
    table = summary_table(methods)
    atomic_write_text(out_dir / "summary.md", table + "\n")
    log.info("Results for task %s on %s (seed %d):\n%s", cfg.task.name, loaded.name, cfg.seed, table)
    log.info("Artifacts written to %s", out_dir)
    return results
