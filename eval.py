"""Evaluate a saved steering vector on a task split, or steer greedy generation.

`python eval.py vector=outputs/.../vectors/ipas_all.safetensors task=mmlu_high_school_mathematics`
`python eval.py mode=generate vector=... 'generate.prompts=["Tell me about your day."]'`
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from pas.errors import UserError
from pas.evaluate import run_eval

log = logging.getLogger("pas.eval")


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Run the chosen mode; in evaluate mode return the steered accuracy (a sweep objective)."""
    try:
        results = run_eval(cfg)
    except UserError as err:
        log.error("%s", err)
        sys.exit(1)
    return results.get("steered_acc")


if __name__ == "__main__":
    main()
