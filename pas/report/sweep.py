"""Cross-seed report of a sweep folder: effects, standard errors, paired t-tests, figures.

A sweep folder is what ``python train.py -m ...`` writes: one job folder per combination, each
with ``.hydra/overrides.yaml`` and, once the job has finished, ``results.json``. Every finished
job contributes one row per result name of its ``comparison`` list (``pas/pasf``, ``sft``, ...),
paired with the unsteered test accuracy of the same job. The report lists by name the jobs that
failed, the jobs without ``results.json`` and the combinations that never started. It leaves
them out of every mean and states that it did.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from scipy import stats  # noqa: E402

from pas.errors import UserError  # noqa: E402
from pas.io import atomic_write_bytes, atomic_write_text  # noqa: E402
from pas.report.artifacts import format_table  # noqa: E402
from pas.sweep_summary import expected_jobs  # noqa: E402

# Task groups in the order the tables list them. Any other group name comes after them.
GROUP_ORDER = ("bias", "morality", "alignment", "intelligence")


class ReportError(UserError):
    """The folder contains no finished runs, or runs that contradict each other."""


@dataclass
class Run:
    """One finished job: its folder and the contents of its ``results.json``."""

    folder: Path
    results: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, int]:
        r = self.results
        return (r["model"], r["task"], int(r["seed"]))


@dataclass
class Problem:
    """A job that did not give a result: failed, unfinished, or never started."""

    kind: str
    where: str
    detail: str


@dataclass
class SweepRuns:
    runs: list[Run] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    expected: int | None = None


def _overrides(job: Path) -> list[str]:
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in yaml.safe_load(path.read_text()) or []]


def _expected_overrides(folder: Path) -> list[frozenset[str]] | None:
    """Return the combinations that a basic-sweeper multirun requested, read from its ``multirun.yaml``."""
    path = folder / "multirun.yaml"
    if not path.is_file():
        return None
    jobs = expected_jobs(OmegaConf.load(path))
    return None if jobs is None else [frozenset(job) for job in jobs]


def collect(folder: Path) -> SweepRuns:
    """Find every job under ``folder`` and sort it into finished runs and problems."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"sweep folder {folder} does not exist; pass the folder that `train.py -m` wrote")
    out = SweepRuns()
    jobs = {p.parent for p in folder.rglob("results.json")} | {p.parent for p in folder.rglob(".hydra")}
    jobs.discard(folder.parent)
    seen: set[frozenset[str]] = set()
    for job in sorted(jobs, key=lambda p: (len(p.parts), _natural(p.name), str(p))):
        name = str(job.relative_to(folder)) if job != folder else "."
        overrides = _overrides(job)
        seen.add(frozenset(overrides))
        path = job / "results.json"
        if not path.is_file():
            out.problems.append(Problem("unfinished", name, " ".join(overrides) or "no overrides recorded"))
            continue
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            out.problems.append(Problem("unreadable", name, f"{path}: {err}"))
            continue
        if results.get("status") != "ok":
            error = results.get("error") or f"status {results.get('status')!r}"
            detail = f"{results.get('task')} seed {results.get('seed')}: {results.get('error_type', 'error')}: {error}"
            out.problems.append(Problem("failed", name, detail))
            continue
        if "comparison" not in results:
            detail = f"{path} has no 'comparison' list (written by an old version)"
            out.problems.append(Problem("unreadable", name, detail))
            continue
        out.runs.append(Run(job, results))
    expected = _expected_overrides(folder)
    if expected is not None:
        out.expected = len(expected)
        for combo in expected:
            if combo not in seen:
                out.problems.append(Problem("missing", "-", " ".join(sorted(combo))))
    return out


def _natural(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (math.inf, name)  # type: ignore[return-value]


@dataclass
class Pairs:
    """Steered and unsteered test accuracies of one result name, one entry per run."""

    steered: list[float] = field(default_factory=list)
    unsteered: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    letter_bias: list[bool] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        s, u = np.asarray(self.steered, float), np.asarray(self.unsteered, float)
        effect = s - u
        n = len(effect)
        se = float(effect.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        p = float("nan")
        if n > 1:
            # nan when every run has the same effect: the t statistic is then undefined.
            p = float(stats.ttest_rel(s, u, alternative="greater").pvalue)
        return {
            "n": n,
            "unsteered_test_acc": float(u.mean()),
            "steered_test_acc": float(s.mean()),
            "effect": float(effect.mean()),
            "effect_se": se,
            "p_value": p,
            "wins": int((effect > 1e-12).sum()),
            "ties": int((np.abs(effect) <= 1e-12).sum()),
            "losses": int((effect < -1e-12).sum()),
            "letter_bias_runs": int(sum(self.letter_bias)),
        }


def _check_conflicts(runs: list[Run]) -> None:
    rows: dict[tuple[Any, ...], tuple[float, Path]] = {}
    for run in runs:
        for row in run.results["comparison"]:
            key = (*run.key, row["name"])
            if key in rows and not math.isclose(rows[key][0], row["test_acc"], abs_tol=1e-9):
                raise ReportError(
                    f"{row['name']} on {key[1]} seed {key[2]} has test accuracy {rows[key][0]} in {rows[key][1]} "
                    f"and {row['test_acc']} in {run.folder}; report folders with one run per task, seed and method"
                )
            rows[key] = (row["test_acc"], run.folder)


def aggregate(runs: list[Run]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return per-task rows and per-group rows, one per result name.

    A task row pairs each seed's steered and unsteered test accuracy. A group row pools every
    (task, seed) pair of the group's tasks, so its t-test treats each run as one paired sample.
    """
    _check_conflicts(runs)
    by_task: dict[tuple[str, str, str], dict[str, Pairs]] = defaultdict(lambda: defaultdict(Pairs))
    by_group: dict[tuple[str, str], dict[str, Pairs]] = defaultdict(lambda: defaultdict(Pairs))
    done: set[tuple[Any, ...]] = set()
    for run in sorted(runs, key=lambda r: r.key):
        r = run.results
        group = r.get("task_group") or "ungrouped"
        unsteered = r["unsteered"]["test_acc"]
        for row in r["comparison"]:
            if row["name"] == "unsteered" or (*run.key, row["name"]) in done:
                continue
            done.add((*run.key, row["name"]))
            task_pairs = by_task[(r["model"], group, r["task"])][row["name"]]
            group_pairs = by_group[(r["model"], group)][row["name"]]
            for pairs in (task_pairs, group_pairs):
                pairs.steered.append(row["test_acc"])
                pairs.unsteered.append(unsteered)
                pairs.seeds.append(int(r["seed"]))
                pairs.letter_bias.append(_letter_bias_flag(r, row["name"]))
    task_rows = [
        {"model": model, "group": group, "task": task, "result": name, **pairs.summary()}
        for (model, group, task), names in sorted(by_task.items(), key=lambda kv: _group_key(kv[0]))
        for name, pairs in names.items()
    ]
    group_rows = [
        {"model": model, "group": group, "task": f"{group} (all tasks)", "result": name, **pairs.summary()}
        for (model, group), names in sorted(by_group.items(), key=lambda kv: _group_key((kv[0][0], kv[0][1], "")))
        for name, pairs in names.items()
    ]
    return task_rows, group_rows


def _letter_bias_flag(results: dict[str, Any], name: str) -> bool:
    """Return whether the run flagged this result's gain as a letter preference (see letter_bias)."""
    tag, _, variant = name.partition("/")
    methods = results.get("methods", {}) if tag == "pas" else results.get("stages", {}).get(tag, {}).get("methods", {})
    record = methods.get(variant, {})
    return bool(record.get("letter_bias", {}).get("flagged", False))


def _group_key(key: tuple[str, str, str]) -> tuple[str, int, str, str]:
    model, group, task = key
    rank = GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)
    return (model, rank, group, task)


def mean_grids(runs: list[Run]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Average each (model, task, result) layer x strength validation grid over seeds."""
    grids: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        r = run.results
        stages = [("pas", r.get("methods", {}))] + [(t, s["methods"]) for t, s in r.get("stages", {}).items()]
        for tag, methods in stages:
            for variant, record in methods.items():
                if "grid" in record:
                    grids[(r["model"], r["task"], f"{tag}/{variant}")].append({**record["grid"], "seed": r["seed"]})
    out = {}
    for key, items in grids.items():
        first = items[0]
        for other in items[1:]:
            if other["layers"] != first["layers"] or other["strengths"] != first["strengths"]:
                raise ReportError(
                    f"{key[2]} on {key[1]} was searched over different grids in different seeds "
                    f"(layers {first['layers']} vs {other['layers']}); report such runs in separate folders"
                )
        out[key] = {
            "layers": first["layers"],
            "strengths": first["strengths"],
            "val_acc": np.mean([np.asarray(g["val_acc"], float) for g in items], axis=0),
            "n": len(items),
        }
    return out


COLUMNS = (
    "model",
    "group",
    "task",
    "result",
    "n",
    "unsteered_test_acc",
    "steered_test_acc",
    "effect",
    "effect_se",
    "p_value",
    "wins",
    "ties",
    "losses",
    "letter_bias_runs",
)


def markdown_table(rows: Sequence[dict[str, Any]], show_model: bool) -> str:
    columns = ["task", "result", "n", "unsteered", "steered", "effect", "SE", "p (one-sided)", "W/T/L", "letter bias"]
    if show_model:
        columns.insert(0, "model")
    body = []
    for row in rows:
        cells = [
            row["task"],
            row["result"],
            str(row["n"]),
            f"{row['unsteered_test_acc']:.3f}",
            f"{row['steered_test_acc']:.3f}",
            f"{row['effect']:+.3f}",
            "-" if math.isnan(row["effect_se"]) else f"{row['effect_se']:.3f}",
            "-" if math.isnan(row["p_value"]) else f"{row['p_value']:.3g}",
            f"{row['wins']}/{row['ties']}/{row['losses']}",
            str(row["letter_bias_runs"]),
        ]
        body.append(([row["model"]] if show_model else []) + cells)
    return format_table(columns, body)


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in COLUMNS})
    return buf.getvalue()


def _save_figure(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def effect_figure(task_rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Draw the mean test effect per task, one bar per result, with standard-error bars."""
    tasks = list(dict.fromkeys((r["model"], r["task"]) for r in task_rows))
    names = list(dict.fromkeys(r["result"] for r in task_rows))
    index = {(r["model"], r["task"], r["result"]): r for r in task_rows}
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(tasks) * max(1, len(names)) * 0.5), 4.5))
    x = np.arange(len(tasks))
    for k, name in enumerate(names):
        means = [index.get((*t, name), {}).get("effect", np.nan) for t in tasks]
        errs = [index.get((*t, name), {}).get("effect_se", np.nan) for t in tasks]
        errs = [0.0 if e is None or math.isnan(e) else e for e in errs]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, means, width, yerr=errs, capsize=3, label=name)
    ax.axhline(0.0, color="black", linewidth=0.8)
    labels = [task if len({m for m, _ in tasks}) == 1 else f"{task}\n{model}" for model, task in tasks]
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel("test accuracy effect (steered - unsteered)")
    ax.set_title("Mean effect per task over seeds (bars: standard error)")
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def heatmap_figure(grid: dict[str, Any], title: str, path: Path) -> None:
    values = np.asarray(grid["val_acc"], float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(grid["strengths"]), 1.2 + 0.4 * len(grid["layers"])))
    image = ax.imshow(values, aspect="auto", cmap="viridis", origin="lower")
    ax.set_xticks(range(len(grid["strengths"])), [f"{s:g}" for s in grid["strengths"]])
    ax.set_yticks(range(len(grid["layers"])), [str(layer) for layer in grid["layers"]])
    ax.set_xlabel("strength")
    ax.set_ylabel("layer")
    ax.set_title(f"{title}\nvalidation accuracy, mean of {grid['n']} seeds", fontsize=9)
    fig.colorbar(image, ax=ax)
    _save_figure(fig, path)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def write_report(folder: Path, out: Path | None = None, title: str | None = None) -> dict[str, Any]:
    """Write ``report.md``, ``report.csv`` and figures for the sweep under ``folder``; return the tables."""
    folder = Path(folder)
    out = Path(out) if out is not None else folder / "report"
    found = collect(folder)
    if not found.runs:
        listed = "; ".join(f"{p.kind} {p.where}: {p.detail}" for p in found.problems[:5])
        raise ReportError(
            f"no finished runs under {folder} (no results.json with status 'ok')"
            + (f"; problems: {listed}" if listed else "")
            + "; pass the folder that `train.py -m` wrote, or wait until its jobs finish"
        )
    task_rows, group_rows = aggregate(found.runs)
    grids = mean_grids(found.runs)
    show_model = len({r["model"] for r in task_rows}) > 1

    figures = out / "figures"
    effect_figure(task_rows, figures / "effect_per_task.png")
    for (model, task, name), grid in sorted(grids.items()):
        stem = _slug(f"heatmap_{task}_{name}" + (f"_{model}" if show_model else ""))
        heatmap_figure(grid, f"{task} {name}" + (f" ({model})" if show_model else ""), figures / f"{stem}.png")

    models = sorted({run.results["model"] for run in found.runs})
    seeds = sorted({int(run.results["seed"]) for run in found.runs})
    lines = [
        f"# Sweep report: {title or folder.resolve().name}",
        "",
        f"Runs found: {len(found.runs)} finished"
        + (f" of {found.expected} expected" if found.expected is not None else "")
        + f"; model(s): {', '.join(models)}; seeds: {', '.join(map(str, seeds))}.",
        "",
        "Each row pairs a result's test accuracy with the unsteered test accuracy of the same run.",
        "effect = mean(steered - unsteered); SE = its standard error over runs; p = one-sided paired",
        "t-test (steered > unsteered, scipy.stats.ttest_rel); W/T/L = runs where the result is above,",
        "equal to or below unsteered. Group rows pool every (task, seed) run of the group. A dash",
        "marks a standard error or p-value that is undefined: one run, or the same effect in every run.",
        "letter bias = runs whose gain the letter-bias check flagged: the flips toward one answer letter",
        "explain the whole gain, so the gain may be a letter preference rather than the behavior.",
        "",
    ]
    if found.problems:
        lines += [f"Runs without a result ({len(found.problems)}), left out of every mean below:", ""]
        lines += [f"- {p.kind}: {p.where} ({p.detail})" for p in found.problems]
        lines.append("")
    lines += ["## Per task", "", markdown_table(task_rows, show_model), ""]
    lines += ["## Per task group", "", markdown_table(group_rows, show_model), ""]
    lines += ["## Figures", "", "![effect per task](figures/effect_per_task.png)", ""]
    for (model, task, name), _grid in sorted(grids.items()):
        stem = _slug(f"heatmap_{task}_{name}" + (f"_{model}" if show_model else ""))
        lines.append(f"- [{task} {name}](figures/{stem}.png)")
    markdown = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.csv", csv_text(task_rows + group_rows))
    atomic_write_text(
        out / "runs.json",
        json.dumps(
            {
                "finished": [str(run.folder.relative_to(folder)) for run in found.runs],
                "problems": [p.__dict__ for p in found.problems],
                "expected": found.expected,
            },
            indent=2,
        )
        + "\n",
    )
    return {"task_rows": task_rows, "group_rows": group_rows, "problems": found.problems, "markdown": markdown}
