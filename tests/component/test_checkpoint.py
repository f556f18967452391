"""Checkpoint round trips, crash safety and corruption reports."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dreamer_tf.run.checkpoint import Checkpoint, CheckpointError

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


class FolderReplay:
    """A replay stand-in that saves and loads one array through ``save(dir)`` / ``load(dir)``."""

    def __init__(self, values=None):
        self.values = np.asarray(values if values is not None else [], np.float32)

    def save(self, directory: Path, previous: Path | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "values.npy", self.values)

    def load(self, directory: Path) -> None:
        self.values = np.load(directory / "values.npy")


def example_state(step: int = 7) -> dict:
    rng = np.random.default_rng(step)
    return {
        "agent": {
            "model": [rng.normal(size=(3, 4)).astype(np.float32), np.arange(5, dtype=np.int64)],
            "optimizer": (np.float32(2.5), np.zeros((), np.int32)),
            "rng": rng.bit_generator.state,  # holds 128-bit Python ints
        },
        "loop": {
            "env_steps": step,
            "credit": 0.25,
            "started": True,
            "last_eval": None,
            "name": "run",
            "numpy_random": np.random.RandomState(step).get_state(),
            "empty": {},
        },
    }


def assert_tree_equal(actual, expected, path="state"):
    assert type(actual) is type(expected) or (
        isinstance(expected, np.generic) and isinstance(actual, np.generic)
    ), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), path
        for key in expected:
            assert_tree_equal(actual[key], expected[key], f"{path}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_tree_equal(a, e, f"{path}/{index}")
    elif isinstance(expected, (np.ndarray, np.generic)):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, path
        np.testing.assert_array_equal(actual, expected)
    else:
        assert actual == expected, path


def folder_digest(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_round_trip_with_replay(tmp_path):
    checkpoint = Checkpoint(tmp_path / "checkpoint")
    assert checkpoint.load() is None
    state = example_state()
    checkpoint.save(state, replay=FolderReplay([1.0, 2.0, 3.0]))
    replay = FolderReplay()
    loaded = checkpoint.load(replay=replay)
    assert_tree_equal(loaded, state)
    np.testing.assert_array_equal(replay.values, [1.0, 2.0, 3.0])
    # The restored generator state continues the same stream.
    generator = np.random.default_rng()
    generator.bit_generator.state = loaded["agent"]["rng"]
    expected = np.random.default_rng()
    expected.bit_generator.state = state["agent"]["rng"]
    assert generator.integers(1 << 30) == expected.integers(1 << 30)


def test_bfloat16_arrays_survive(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    value = np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(2, 3)
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save({"agent": {"w": value}})
    loaded = checkpoint.load()["agent"]["w"]
    assert loaded.dtype == value.dtype
    np.testing.assert_array_equal(loaded.astype(np.float32), value.astype(np.float32))


def test_second_save_replaces_the_first_and_leaves_no_temporaries(tmp_path):
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save(example_state(1))
    checkpoint.save(example_state(2))
    assert checkpoint.load()["loop"]["env_steps"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


def test_unsupported_values_are_rejected_before_anything_is_replaced(tmp_path):
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save(example_state(1))
    with pytest.raises(TypeError, match="object"):
        checkpoint.save({"agent": {"bad": object()}})
    with pytest.raises(TypeError, match="string"):
        checkpoint.save({"agent": {1: 2}})
    assert checkpoint.load()["loop"]["env_steps"] == 1


def test_crash_while_writing_the_new_folder_keeps_the_last_good(tmp_path, monkeypatch):
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save(example_state(1), replay=FolderReplay([1.0]))

    class CrashingReplay(FolderReplay):
        def save(self, directory, previous=None):
            super().save(directory)
            raise SystemExit("killed while writing the replay")

    with pytest.raises(SystemExit):
        checkpoint.save(example_state(2), replay=CrashingReplay([2.0]))
    assert any(p.name.startswith("tmp-") for p in tmp_path.iterdir())
    replay = FolderReplay()
    assert checkpoint.load(replay=replay)["loop"]["env_steps"] == 1
    np.testing.assert_array_equal(replay.values, [1.0])
    # The next save cleans the half-written folder up.
    checkpoint.save(example_state(3), replay=FolderReplay([3.0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


@pytest.mark.parametrize("crash_at_rename", [0, 1])
def test_crash_between_the_renames_keeps_a_loadable_checkpoint(tmp_path, monkeypatch, crash_at_rename):
    """A kill after ``latest -> previous`` or after ``tmp -> latest`` leaves a complete checkpoint."""
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save(example_state(1))
    real_rename, calls = os.rename, []

    def rename(source, target):
        real_rename(source, target)
        calls.append(target)
        if len(calls) > crash_at_rename:
            raise SystemExit("killed between renames")

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(SystemExit):
        checkpoint.save(example_state(2))
    monkeypatch.setattr(os, "rename", real_rename)
    expected = 1 if crash_at_rename == 0 else 2  # only 'previous' exists, or the new 'latest' is in place
    assert checkpoint.load()["loop"]["env_steps"] == expected
    checkpoint.save(example_state(3))
    assert checkpoint.load()["loop"]["env_steps"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]


CASES = [
    (target, damage)
    for target in ("agent.npz", "state.json", "manifest.json", "replay/values.npy")
    for damage in ("flip", "truncate", "delete")
    # Replay files are only size-checked (they can be gigabytes): a flipped bit is the replay's to find.
    if (target, damage) != ("replay/values.npy", "flip")
]


@pytest.mark.parametrize("target,damage", CASES)
def test_corrupt_file_is_named_and_nothing_is_touched(tmp_path, target, damage):
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save(example_state(2), replay=FolderReplay([2.0]))
    # An older complete checkpoint as 'previous', as a save interrupted between its renames leaves it.
    Checkpoint(tmp_path / "scratch").save(example_state(1), replay=FolderReplay([1.0]))
    os.rename(tmp_path / "scratch" / "latest", checkpoint.previous)
    shutil.rmtree(tmp_path / "scratch")

    path = checkpoint.latest / target
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-3])
    else:
        path.unlink()
    before = {"latest": folder_digest(checkpoint.latest), "previous": folder_digest(checkpoint.previous)}

    if (target, damage) == ("manifest.json", "delete"):
        # Without a manifest 'latest' is an unfinished save; the complete 'previous' is used.
        assert checkpoint.load()["loop"]["env_steps"] == 1
        return
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(replay=FolderReplay())
    message = str(info.value)
    assert str(path) in message, message
    assert "Nothing was modified" in message and "fallback=True" in message, message
    after = {"latest": folder_digest(checkpoint.latest), "previous": folder_digest(checkpoint.previous)}
    assert after == before
    replay = FolderReplay()
    assert checkpoint.load(replay=replay, fallback=True)["loop"]["env_steps"] == 1
    np.testing.assert_array_equal(replay.values, [1.0])


def test_corrupt_only_checkpoint_says_how_to_start_afresh(tmp_path):
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save(example_state(1))
    (checkpoint.latest / "agent.npz").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"agent\.npz is corrupt.*Nothing was modified.*afresh"):
        checkpoint.load()


def test_unchanged_replay_chunks_are_linked_from_the_last_checkpoint(tmp_path):
    from dreamer_tf.run.replay import Replay
    from tests.component.test_replay import fill

    checkpoint = Checkpoint(tmp_path)
    replay = Replay(length=4, capacity=1000, online=False, chunk=8)
    fill(replay, 20)  # chunks 0 and 1 are full, chunk 2 is still filling
    checkpoint.save(example_state(1), replay=replay)
    first = {p.name: p.stat().st_ino for p in (tmp_path / "latest" / "replay").glob("*.npz")}
    fill(replay, 3)  # only the last chunk changes
    checkpoint.save(example_state(2), replay=replay)
    second = {p.name: p.stat().st_ino for p in (tmp_path / "latest" / "replay").glob("*.npz")}
    shared = set(first) & set(second)
    assert len(shared) == 2 and all(first[name] == second[name] for name in shared)  # the same files
    assert len(second) == 3
    restored = Replay(length=4, capacity=1000, online=False, chunk=8)
    checkpoint.load(replay=restored)
    assert restored.stats()["inserts"] == replay.stats()["inserts"]
