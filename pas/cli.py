"""Command-line wrapper around a Hydra main: a hint after a config typo, and the sweep's exit status."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig, OmegaConf

from pas.sweep_summary import last_sweep_problems

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
_KEEP_CHARS = 20_000


class _StderrRecorder:
    """Forward writes to the real stderr and keep the last characters, so Hydra's error can be read back."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tail = ""

    def write(self, text: str) -> int:
        self.tail = (self.tail + text)[-_KEEP_CHARS:]
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _flatten(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, DictConfig):
        for key in node:
            name = f"{prefix}.{key}" if prefix else str(key)
            yield name
            yield from _flatten(node._get_node(key), name)


def known_keys(conf_dir: Path = CONF_DIR) -> set[str]:
    """Return every dotted key that the root config or an option of a config group defines."""
    keys: set[str] = set()
    for path in sorted(conf_dir.rglob("*.yaml")):
        node = OmegaConf.load(path)
        if not isinstance(node, DictConfig):
            continue
        group = path.parent.relative_to(conf_dir).as_posix()
        is_global = path.read_text(encoding="utf-8").lstrip().startswith("# @package _global_")
        prefix = "" if group == "." or is_global else group.replace("/", ".")
        keys.update(key for key in _flatten(node, prefix) if not key.endswith("defaults"))
    return keys


def _close(word: str, options: set[str] | list[str]) -> list[str]:
    return difflib.get_close_matches(word, sorted(options), n=3, cutoff=0.6)


def config_hint(message: str, conf_dir: Path = CONF_DIR) -> str | None:
    """Return a hint for a Hydra composition error about an unknown key or option, or None."""
    option = re.search(r"Could not find '([\w/]+)/([^'/]+)'", message)
    if option:
        group, name = option.groups()
        options = {path.stem for path in (conf_dir / group).glob("*.yaml")}
        close = _close(name, options)
        if close:
            return f"Hint: there is no {group} named {name!r}; did you mean {' or '.join(map(repr, close))}?"
        return f"Hint: pick a {group} from conf/{group}/: {', '.join(sorted(options))}."
    key = re.search(r"full_key: (\S+)", message) or re.search(r"Could not override '([^']+)'", message)
    if key and "is not in struct" in message:
        name = key.group(1).lstrip("+")
        close = _close(name, known_keys(conf_dir))
        fix = f"did you mean {' or '.join(map(repr, close))}?" if close else "check the spelling."
        return (
            f"Hint: {name!r} is not a key of this config; {fix} "
            "`python train.py --cfg job` prints every key of the composed config."
        )
    return None


def run_cli(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function; print a hint after a config typo and exit 1 after a sweep with failures."""
    recorder = _StderrRecorder(sys.stderr)
    sys.stderr = recorder  # type: ignore[assignment]
    try:
        main()
    except SystemExit as exit_request:
        sys.stderr = recorder.stream
        if exit_request.code not in (0, None):
            hint = config_hint(recorder.tail)
            if hint:
                sys.stderr.write(hint + "\n")
        raise
    finally:
        sys.stderr = recorder.stream
    if last_sweep_problems():
        sys.exit(1)
