"""``python -m pas.report SWEEP_DIR``: the cross-seed report of a sweep folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pas.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pas.report",
        description="Summarize a `train.py -m` sweep folder: per task and task group, the mean unsteered and "
        "steered test accuracy per result, the effect with its standard error, a one-sided paired t-test "
        "across seeds, wins / ties / losses, and figures.",
    )
    parser.add_argument("folder", type=Path, help="the sweep folder (hydra.sweep.dir) or any folder holding runs")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: FOLDER/report)")
    parser.add_argument("--title", default=None, help="the report's heading (default: the folder's name)")
    args = parser.parse_args(argv)
    from pas.report.sweep import write_report

    try:
        report = write_report(args.folder, args.out, args.title)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report["markdown"])
    out = args.out if args.out is not None else args.folder / "report"
    print(f"Report written to {out}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
