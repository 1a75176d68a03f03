"""Atomic writes: complete files with the permissions a plain open() would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pas.io import atomic_write_json, atomic_write_text


def test_atomic_write_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a" / "x.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["x.txt"]


def test_atomic_json_is_sorted(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "r.json", {"b": 1, "a": [1.5]})
    assert path.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
