"""Read the history of an offline W&B run (``run-<id>.wandb``) without a W&B server.

The file is a LevelDB-style log (W&B's own framing) of ``wandb_internal_pb2.Record`` messages:
a 7-byte file header (``:W&B``, a 2-byte magic, a version byte), then 32 KiB blocks of
records, each with a 7-byte header (CRC-32, little-endian length, type: full, first, middle, last).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> list[bytes]:
    """The payloads of every complete record in a ``.wandb`` file."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        left = BLOCK - offset % BLOCK
        if left < HEADER:
            offset += left  # block padding
            continue
        _, length, kind = struct.unpack_from("<IHB", data, offset)
        payload = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind == FULL:
            out.append(payload)
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            out.append(pending + payload)
        elif kind == 0 and length == 0:
            offset += BLOCK - offset % BLOCK if offset % BLOCK else 0
    return out


def history(path: str | Path) -> list[tuple[int, str, object]]:
    """``(step, key, value)`` of every item the run logged with ``wandb.log``, in order."""
    from wandb.proto import wandb_internal_pb2

    out = []
    for payload in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") != "history":
            continue
        step = record.history.step.num
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            out.append((step, key, json.loads(item.value_json)))
    return out


def run_info(path: str | Path) -> tuple[str, str, dict[str, object]]:
    """``(run id, display name, config)`` from the run's ``run`` record (its config as started)."""
    from wandb.proto import wandb_internal_pb2

    for payload in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "run":
            run = record.run
            config = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in run.config.update
            }
            return run.run_id, run.display_name, config
    raise ValueError(f"{path} holds no run record")
