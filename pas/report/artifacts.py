"""Run artifacts: predictions CSV, validation heatmaps and the summary table."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # file output only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from pas.data.schema import LETTERS, MCItem  # noqa: E402
from pas.evaluation.metrics import flip_labels  # noqa: E402
from pas.io import atomic_write_bytes, atomic_write_text  # noqa: E402
from pas.steering.sweep import SweepResult  # noqa: E402

SUMMARY_COLUMNS = ("method", "layer", "strength", "val acc", "test acc", "unsteered test", "effect", "R2W", "W2R")


def write_predictions_csv(
    path: Path,
    items: Sequence[MCItem],
    unsteered: Sequence[int],
    steered: Sequence[int],
) -> Path:
    """Write one row per test item: target, both predictions as letters, and the flip label."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["item_id", "n_choices", "target", "unsteered_pred", "steered_pred", "flip"])
    targets = [item.target for item in items]
    for item, base, steer, flip in zip(items, unsteered, steered, flip_labels(unsteered, steered, targets)):
        writer.writerow([item.id, item.n_choices, LETTERS[item.target], LETTERS[base], LETTERS[steer], flip])
    return atomic_write_text(path, buffer.getvalue())


def write_heatmap(path: Path, result: SweepResult, unsteered_val_acc: float, title: str) -> Path:
    """Plot validation accuracy over layers (rows) and strengths (columns) as a PNG."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(result.strengths), 1.2 + 0.4 * len(result.layers)))
    image = ax.imshow(result.val_acc.numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(result.strengths)), [f"{s:g}" for s in result.strengths], rotation=45)
    ax.set_yticks(range(len(result.layers)), [str(layer) for layer in result.layers])
    ax.set_xlabel("strength")
    ax.set_ylabel("layer")
    ax.set_title(f"{title}\nval acc (unsteered {unsteered_val_acc:.3f})", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def summary_rows(methods: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for name, m in methods.items():
        rows.append(
            [
                name,
                str(m["layer"]),
                f"{m['strength']:g}",
                f"{m['val_acc']:.3f}",
                f"{m['test_acc']:.3f}",
                f"{m['unsteered_test_acc']:.3f}",
                f"{m['effect']:+.3f}",
                str(m["flips"]["r2w"]),
                str(m["flips"]["w2r"]),
            ]
        )
    return rows


def format_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Format rows as a Markdown table with aligned columns."""
    widths = [max([len(columns[k])] + [len(row[k]) for row in rows]) for k in range(len(columns))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(methods: dict[str, dict[str, Any]]) -> str:
    return format_table(SUMMARY_COLUMNS, summary_rows(methods))


COMPARISON_COLUMNS = ("result", "layer", "strength", "val acc", "test acc", "vs unsteered", "vs baseline", "R2W", "W2R")


def _optional(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """Format the side-by-side test results (unsteered, baseline, PAS, combined) as Markdown."""
    body = [
        [
            row["name"],
            _optional(row.get("layer"), "d"),
            _optional(row.get("strength"), "g"),
            _optional(row.get("val_acc"), ".3f"),
            f"{row['test_acc']:.3f}",
            f"{row['effect']:+.3f}",
            _optional(row.get("effect_vs_baseline"), "+.3f"),
            str(row["flips"]["r2w"]),
            str(row["flips"]["w2r"]),
        ]
        for row in rows
    ]
    return format_table(COMPARISON_COLUMNS, body)
