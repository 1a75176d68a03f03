"""Read the records of an offline W&B run file (``run-<id>.wandb``) without a W&B server.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB
blocks of chunks, each with a 7-byte header (CRC-32 of type and data, little-endian length, type).
Chunk types 1 (full), 2 (first), 3 (middle) and 4 (last) carry one serialized
``wandb_internal_pb2.Record`` in one or several pieces. wandb 0.31 no longer ships a Python reader
for these files, so the tests use this one and W&B's own protobuf schema.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

HEADER = b":W&B\xe1\xbe\x00"
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[Any]:
    """Return every record of ``path`` in file order, checking each chunk's CRC."""
    data = path.read_bytes()
    assert data[: len(HEADER)] == HEADER, f"{path} is not a W&B run file"
    records, pending, pos = [], b"", len(HEADER)
    while pos + CHUNK_HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER_SIZE:
            pos += left_in_block  # the block's zero padding
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER_SIZE])
        if pos + CHUNK_HEADER_SIZE + length > len(data):
            break  # a chunk still being written
        chunk = data[pos + CHUNK_HEADER_SIZE : pos + CHUNK_HEADER_SIZE + length]
        pos += CHUNK_HEADER_SIZE + length
        if kind == 0 and length == 0:
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, f"bad CRC at byte {pos} of {path}"
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
            pending = b""
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def of_type(records: list[Any], kind: str) -> list[Any]:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def merged_config(records: list[Any]) -> dict[str, Any]:
    """Apply every config update in order and return the final config."""
    config: dict[str, Any] = {}
    for record in of_type(records, "config"):
        for item in record.update:
            config[_key(item)] = json.loads(item.value_json)
    return config


def merged_summary(records: list[Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for record in of_type(records, "summary"):
        for item in record.update:
            summary[_key(item)] = json.loads(item.value_json)
    return summary


def history_rows(records: list[Any]) -> list[dict[str, Any]]:
    """Return each logged history row as a dict, with the path of a nested value (media) as its key."""
    return [{_key(item): json.loads(item.value_json) for item in record.item} for record in of_type(records, "history")]
