"""The summary of a Hydra multirun: which jobs finished, failed or left no result, and why.

``SweepSummaryCallback`` is registered under ``hydra.callbacks`` in ``conf/config.yaml``. After the
last job it reads each job folder's ``results.json`` and writes ``sweep_summary.json`` and
``sweep_summary.md`` in the sweep folder. It reads files rather than job return values, so it works
the same for the basic launcher and for launchers that run jobs in other processes (joblib,
submitit). ``train.py`` exits with status 1 when the last sweep had a failed or missing job.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pas.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

RESULT_KEYS = ("task", "method", "seed", "error", "error_type")
_last_sweep_problems = 0


def last_sweep_problems() -> int:
    """Return the number of failed or missing jobs of the last multirun in this process (0 without one)."""
    return _last_sweep_problems


def expected_jobs(config: DictConfig) -> list[list[str]] | None:
    """Return the override list of every job the basic sweeper launches, or None for other sweepers.

    Sweepers such as Optuna decide their jobs while they run, so only the jobs found on disk are listed.
    """
    target = OmegaConf.select(config, "hydra.sweeper._target_", default="")
    if not str(target).endswith("BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(OmegaConf.select(config, "hydra.overrides.task", default=[]))
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def _job_folders(sweep_dir: Path) -> list[tuple[Path, list[str]]]:
    found = []
    for overrides_file in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        folder = overrides_file.parent.parent
        found.append((folder, [str(o) for o in OmegaConf.load(overrides_file)]))
    return found


def _read_result(folder: Path) -> dict[str, Any]:
    path = folder / "results.json"
    if not path.is_file():
        return {"status": "missing", "error": "the job wrote no results.json (it was killed or is still running)"}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return {"status": "missing", "error": f"results.json cannot be read: {err}"}
    return {"status": results.get("status", "missing"), **{key: results.get(key) for key in RESULT_KEYS}}


def collect_jobs(sweep_dir: Path, expected: list[list[str]] | None) -> list[dict[str, Any]]:
    """Return one entry per job: its folder, overrides, status (ok, failed, missing) and error."""
    on_disk = _job_folders(sweep_dir)
    jobs = []
    for folder, overrides in on_disk:
        entry = {"folder": str(folder.relative_to(sweep_dir)), "overrides": overrides, **_read_result(folder)}
        jobs.append(entry)
    if expected is not None:
        seen = {tuple(sorted(overrides)) for _, overrides in on_disk}
        for overrides in expected:
            if tuple(sorted(overrides)) not in seen:
                jobs.append(
                    {"folder": None, "overrides": overrides, "status": "missing", "error": "the job never started"}
                )
    return jobs


def summary_markdown(jobs: list[dict[str, Any]], counts: dict[str, int]) -> str:
    lines = [
        f"{counts['ok']} ok, {counts['failed']} failed, {counts['missing']} missing of {len(jobs)} jobs.",
        "",
        "| status | folder | overrides | error |",
        "|---|---|---|---|",
    ]
    for job in jobs:
        error = (job.get("error") or "").replace("\n", " ").replace("|", "\\|")
        if job.get("error_type"):
            error = f"{job['error_type']}: {error}"
        overrides = " ".join(job["overrides"])
        lines.append(f"| {job['status']} | {job['folder'] or '-'} | {overrides} | {error} |")
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: Path, expected: list[list[str]] | None) -> dict[str, Any]:
    """Write ``sweep_summary.json`` and ``sweep_summary.md`` in ``sweep_dir`` and return the summary."""
    jobs = collect_jobs(sweep_dir, expected)
    counts = {status: sum(job["status"] == status for job in jobs) for status in ("ok", "failed", "missing")}
    summary = {"sweep_dir": str(sweep_dir), "counts": counts, "jobs": jobs}
    atomic_write_json(sweep_dir / "sweep_summary.json", summary)
    atomic_write_text(sweep_dir / "sweep_summary.md", summary_markdown(jobs, counts))
    return summary


class SweepSummaryCallback(Callback):
    """Write the sweep summary after a multirun and log every failed or missing job."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _last_sweep_problems
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        summary = write_summary(sweep_dir, expected_jobs(config))
        counts = summary["counts"]
        _last_sweep_problems = counts["failed"] + counts["missing"]
        for job in summary["jobs"]:
            if job["status"] != "ok":
                log.error(
                    "Job %s (%s) %s: %s", job["folder"], " ".join(job["overrides"]), job["status"], job.get("error")
                )
        log.info(
            "Sweep summary: %d ok, %d failed, %d missing; see %s",
            counts["ok"],
            counts["failed"],
            counts["missing"],
            sweep_dir / "sweep_summary.md",
        )
