"""``eval.py``: apply a saved steering vector to any task split, or steer greedy generation.

``mode=evaluate`` splits the task exactly as ``train.py`` does (same loader, seed, sample size and
fractions), scores the chosen split unsteered and steered, and writes ``eval_results.json``,
``predictions.csv`` and ``summary.md``. Applied to another task than the vector's own, this is the
transfer (catastrophic-forgetting) check. ``mode=generate`` writes greedy completions, unsteered and
steered, to ``generations.jsonl`` and ``summary.md``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import pas
from pas.config import ConfigError, call_target
from pas.data.prompts import PromptBuilder, PromptFormat, render_completion
from pas.evaluation.letter_bias import check_letter_bias, letter_counts
from pas.evaluation.metrics import count_flips
from pas.evaluation.scoring import letter_token_ids
from pas.io import atomic_write_json, atomic_write_text
from pas.models.layers import check_layer
from pas.models.loading import LoadedModel
from pas.pipeline import make_datamodule, make_prompt_builder
from pas.report.artifacts import format_table, write_predictions_csv
from pas.steering.engines import make_engine
from pas.steering.generation import Steering, generate_greedy
from pas.steering.sweep import predictions_from_logits, steered_predictions
from pas.steering.vector import SteeringVector

log = logging.getLogger(__name__)

MODES = ("evaluate", "generate")
SPLITS = ("train", "val", "test")


def _check_config(cfg: DictConfig) -> None:
    """Raise one ConfigError that lists every invalid eval setting."""
    problems = []
    if cfg.mode not in MODES:
        problems.append(f"mode must be one of {list(MODES)}, got {cfg.mode!r}")
    if OmegaConf.is_missing(cfg, "vector") or not cfg.vector:
        problems.append("vector is not set; pass vector=PATH to a .safetensors file written by train.py")
    else:
        source = Path(str(cfg.vector)).expanduser()
        source = source if source.suffix == ".safetensors" else source.with_suffix(".safetensors")
        if not source.is_file():
            problems.append(f"vector file not found: {source}")
    if cfg.split not in SPLITS:
        problems.append(f"split must be one of {list(SPLITS)}, got {cfg.split!r}")
    strength = cfg.strength
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, (int, float))):
        problems.append(f"strength must be a number or null, got {strength!r}")
    elif strength is not None and not math.isfinite(strength):
        problems.append(f"strength must be finite, got {strength!r}")
    layer = cfg.layer
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        problems.append(f"layer must be an integer (0-based decoder block) or null, got {layer!r}")
    gen = cfg.generate
    if not isinstance(gen.max_new_tokens, int) or gen.max_new_tokens < 1:
        problems.append(f"generate.max_new_tokens must be a positive integer, got {gen.max_new_tokens!r}")
    if not isinstance(gen.batch_size, int) or gen.batch_size < 1:
        problems.append(f"generate.batch_size must be a positive integer, got {gen.batch_size!r}")
    if problems:
        raise ConfigError("invalid eval config:\n  - " + "\n  - ".join(problems))


def load_adapter(loaded: LoadedModel, folder: str) -> LoadedModel:
    """Wrap the model with a peft LoRA adapter read from ``folder`` (safetensors weights only)."""
    from peft import PeftModel

    path = Path(folder).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"adapter={folder!r} is not a peft adapter folder: adapter_config.json not found in {path}")
    if not (path / "adapter_model.safetensors").is_file():
        raise ConfigError(
            f"adapter folder {path} has no adapter_model.safetensors; PAS loads adapter weights only from "
            "safetensors, which cannot run code when loaded"
        )
    model = PeftModel.from_pretrained(loaded.model, str(path), is_trainable=False).eval()
    return LoadedModel(model, loaded.tokenizer, loaded.name, loaded.revision)


def _load(cfg: DictConfig) -> tuple[LoadedModel, SteeringVector, int, float]:
    """Load the model (and adapter) and the vector, and resolve the layer and strength to apply."""
    loaded: LoadedModel = call_target(cfg.model.load)
    if cfg.adapter:
        loaded = load_adapter(loaded, cfg.adapter)
    vector = SteeringVector.load(
        cfg.vector, expected_hidden_size=loaded.hidden_size, expected_model=loaded.name if cfg.check_model else None
    )
    layer = vector.layer if cfg.layer is None else int(cfg.layer)
    check_layer(layer, loaded.num_layers)
    strength = vector.strength if cfg.strength is None else float(cfg.strength)
    if layer != vector.layer:
        log.warning("Applying the vector at layer %d, not at layer %d where it was fitted", layer, vector.layer)
    return loaded, vector, layer, strength


def _vector_info(cfg: DictConfig, vector: SteeringVector) -> dict[str, Any]:
    return {
        "file": str(cfg.vector),
        "method": vector.method,
        "site": vector.site,
        "fitted_layer": vector.layer,
        "fitted_strength": vector.strength,
        "source_task": vector.metadata.get("task"),
        "source_seed": vector.metadata.get("seed"),
        "model_name": vector.metadata.get("model_name"),
    }


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score one task split unsteered and steered; write and return ``eval_results.json``."""
    out_dir = Path(cfg.output_dir)
    loaded, vector, layer, strength = _load(cfg)
    dm = make_datamodule(cfg)
    items = dm.splits[cfg.split]

    prompts = make_prompt_builder(cfg, loaded)
    letter_ids = letter_token_ids(loaded.tokenizer, max(item.n_choices for item in items))
    engine = make_engine(
        cfg.sweep.engine,
        loaded.model,
        prompts.encode_prompts(items),
        cfg.sweep.batch_size,
        letter_ids,
        cfg.model.get("layers_path"),
        cfg.sweep.configs_per_pass,
    )

    n_choices = [item.n_choices for item in items]
    targets = [item.target for item in items]
    unsteered = predictions_from_logits(engine.unsteered_logits(), engine, n_choices)
    steered = steered_predictions(engine, vector.vector.float(), layer, vector.site, strength, n_choices)
    flips = count_flips(unsteered.pred, steered.pred, targets)

    results = {
        "status": "ok",
        "mode": "evaluate",
        "task": cfg.task.name,
        "split": cfg.split,
        "splits": dm.splits.sizes(),
        "seed": cfg.seed,
        "model": loaded.name,
        "model_revision": loaded.revision,
        "adapter": cfg.adapter,
        "package_version": pas.__version__,
        "vector": _vector_info(cfg, vector),
        "layer": layer,
        "strength": strength,
        "unsteered_acc": unsteered.accuracy(targets),
        "steered_acc": steered.accuracy(targets),
        "effect": steered.accuracy(targets) - unsteered.accuracy(targets),
        "flips": {"r2w": flips.r2w, "w2r": flips.w2r},
        "predicted_letters": {"unsteered": letter_counts(unsteered.pred), "steered": letter_counts(steered.pred)},
        "correct_letters": dm.letter_distribution()[cfg.split],
        "letter_bias": check_letter_bias(unsteered.pred, steered.pred, targets).to_dict(),
    }

    atomic_write_json(out_dir / "eval_results.json", results)
    write_predictions_csv(out_dir / "predictions.csv", items, unsteered.pred, steered.pred)
    report = _evaluate_summary(results)
    atomic_write_text(out_dir / "summary.md", report)
    log.info("Results on %s (%s split):\n%s", cfg.task.name, cfg.split, report)
    return results


def _evaluate_summary(results: dict[str, Any]) -> str:
    vector = results["vector"]
    columns = ("task", "split", "vector", "layer", "strength", "unsteered acc", "steered acc", "effect", "R2W", "W2R")
    row = [
        results["task"],
        results["split"],
        f"{vector['method']} from {vector['source_task']}",
        str(results["layer"]),
        f"{results['strength']:g}",
        f"{results['unsteered_acc']:.3f}",
        f"{results['steered_acc']:.3f}",
        f"{results['effect']:+.3f}",
        str(results["flips"]["r2w"]),
        str(results["flips"]["w2r"]),
    ]
    letters = results["predicted_letters"]
    text = format_table(columns, [row]) + "\n\n"
    text += f"Predicted letters: unsteered {letters['unsteered']}, steered {letters['steered']}; "
    text += f"correct letters {results['correct_letters']}.\n"
    bias = results["letter_bias"]
    text += f"Letter bias: {'FLAGGED, ' if bias['flagged'] else ''}{bias['reason']}.\n"
    return text


def read_prompts(inline: list[str], path: str | None) -> list[str]:
    """Collect prompts from the command line and from a file (one per line, or jsonl with a ``prompt`` field)."""
    prompts = list(inline)
    if path:
        source = Path(path).expanduser()
        if not source.is_file():
            raise ConfigError(f"generate.prompts_file not found: {source}")
        lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        if source.suffix == ".jsonl":
            for number, line in enumerate(lines, start=1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{source} line {number} is not valid JSON ({err.msg})") from err
                if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                    raise ConfigError(f'{source} line {number} needs a string field "prompt"')
                prompts.append(record["prompt"])
        else:
            prompts += lines
    if not prompts:
        raise ConfigError(
            'no prompts to generate from; pass \'generate.prompts=["first prompt","second prompt"]\' '
            "or generate.prompts_file=FILE (one prompt per line, or jsonl with a prompt field)"
        )
    return prompts


def generate(cfg: DictConfig) -> dict[str, Any]:
    """Write greedy completions, unsteered and steered, for the configured prompts."""
    out_dir = Path(cfg.output_dir)
    gen = cfg.generate
    texts = read_prompts(list(gen.prompts or []), gen.prompts_file)
    loaded, vector, layer, strength = _load(cfg)
    fmt = PromptFormat(**cfg.prompt)

    builder = PromptBuilder(fmt, loaded.tokenizer)
    # With prompt.chat_template each prompt becomes the user turn, followed by the assistant's generation prompt.
    token_lists = builder.encode([render_completion(text, "", fmt, loaded.tokenizer) for text in texts])
    eos = loaded.tokenizer.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    steering = Steering(vector.vector.float(), layer, vector.site, strength, cfg.model.get("layers_path"))
    runs = {}
    for name, steer in (("unsteered", None), ("steered", steering)):
        runs[name] = generate_greedy(
            loaded.model, token_lists, gen.max_new_tokens, eos_ids, steer, gen.batch_size, gen.use_cache
        )

    records = []
    for k, text in enumerate(texts):
        record: dict[str, Any] = {"prompt": text}
        for name, outputs in runs.items():
            record[name] = loaded.tokenizer.decode(outputs[k], skip_special_tokens=True)
            record[f"{name}_tokens"] = outputs[k]
        records.append(record)

    atomic_write_text(out_dir / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    results = {
        "status": "ok",
        "mode": "generate",
        "model": loaded.name,
        "adapter": cfg.adapter,
        "vector": _vector_info(cfg, vector),
        "layer": layer,
        "strength": strength,
        "max_new_tokens": gen.max_new_tokens,
        "use_cache": gen.use_cache,
        "chat_template": fmt.chat_template,
        "generations": records,
    }

    atomic_write_json(out_dir / "eval_results.json", results)
    report = "\n".join(
        f"### Prompt {k + 1}\n\n{r['prompt']}\n\nUnsteered: {r['unsteered']}\n\n"
        f"Steered (layer {layer}, strength {strength:g}): {r['steered']}\n"
        for k, r in enumerate(records)
    )
    atomic_write_text(out_dir / "summary.md", report)
    log.info("Completions:\n%s", report)
    return results


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    """Check the config, write the resolved config, and run the chosen mode."""
    _check_config(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return evaluate(cfg) if cfg.mode == "evaluate" else generate(cfg)
