"""Replay buffer: windows, stepids, eviction, the online queue, uniformity, update, save and load."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from dreamer_tf.run.replay import INDEX, Replay

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


def make_step(worker: int, position: int, episode_length: int = 0) -> dict[str, np.ndarray]:
    """A step whose values say where it came from: vector = (worker, position)."""
    first = episode_length > 0 and position % episode_length == 0
    return {
        "image": np.full((4, 4, 3), position % 256, np.uint8),
        "vector": np.array([worker, position], np.float32),
        "reward": np.float32(position),
        "is_first": np.asarray(first),
        "is_last": np.asarray(episode_length > 0 and position % episode_length == episode_length - 1),
        "is_terminal": np.asarray(False),
        "action": np.int32(position % 5),
        "dyn/deter": np.zeros(3, np.float32),
        "log/ignored": np.float32(1.0),
    }


def fill(replay: Replay, steps: int, workers: int = 1, episode_length: int = 0) -> None:
    for position in range(steps):
        for worker in range(workers):
            replay.add(make_step(worker, position, episode_length), worker)


def check_windows(batch: dict[str, np.ndarray], length: int) -> None:
    """Every window holds consecutive positions of one worker, with strictly increasing stepids."""
    assert batch["stepid"].dtype == np.int64 and batch["stepid"].shape[1] == length
    for row in range(len(batch["stepid"])):
        workers, positions = batch["vector"][row, :, 0], batch["vector"][row, :, 1]
        assert (workers == workers[0]).all(), workers
        np.testing.assert_array_equal(positions, positions[0] + np.arange(length))
        np.testing.assert_array_equal(batch["reward"][row], positions)
        np.testing.assert_array_equal(batch["image"][row, :, 0, 0, 0], positions.astype(np.int64) % 256)
        assert (np.diff(batch["stepid"][row]) > 0).all(), batch["stepid"][row]


def test_windows_are_contiguous_with_correct_stepids():
    replay = Replay(length=6, capacity=1000, online=False, chunk=8)
    fill(replay, 40, workers=3)
    assert len(replay) == 120
    batch = replay.sample(32)
    assert batch["image"].shape == (32, 6, 4, 4, 3) and batch["image"].dtype == np.uint8
    assert batch["vector"].shape == (32, 6, 2) and batch["action"].dtype == np.int32
    assert "log/ignored" not in batch
    check_windows(batch, 6)
    # Steps were added round-robin over 3 workers: stepid = 3 * position + worker.
    expected = 3 * batch["vector"][..., 1] + batch["vector"][..., 0]
    np.testing.assert_array_equal(batch["stepid"], expected.astype(np.int64))


def test_windows_cross_chunk_boundaries():
    replay = Replay(length=7, capacity=1000, online=False, chunk=4)  # every window spans 2-3 chunks
    fill(replay, 30)
    batch = replay.sample(200)
    check_windows(batch, 7)
    starts = set(batch["vector"][:, 0, 1].astype(int))
    assert starts == set(range(30 - 7 + 1)), sorted(starts)


def test_episode_boundaries_are_marked_inside_windows():
    replay = Replay(length=5, capacity=1000, online=False, chunk=16)
    fill(replay, 40, episode_length=8)
    batch = replay.sample(64)
    positions = batch["vector"][..., 1].astype(int)
    assert batch["is_first"][:, 0].all()  # the model starts a sequence at every window start
    np.testing.assert_array_equal(batch["is_first"][:, 1:], positions[:, 1:] % 8 == 0)
    np.testing.assert_array_equal(batch["is_last"][:, :-1], positions[:, :-1] % 8 == 7)


def test_capacity_evicts_oldest_steps_and_frees_chunks():
    replay = Replay(length=4, capacity=50, online=False, chunk=8)
    fill(replay, 60, workers=2)
    assert len(replay) == 50
    batch = replay.sample(500)
    check_windows(batch, 4)
    # The 50 newest stepids of 120 remain: positions >= 35 of both workers.
    assert batch["stepid"].min() >= 70 and batch["vector"][..., 1].min() >= 35
    assert replay.stats()["chunks"] <= 2 * (50 // 2 // 8 + 2)
    assert replay.stats()["size"] == 50 and replay.stats()["inserts"] == 120


def test_online_queue_serves_fresh_windows_in_order():
    replay = Replay(length=5, capacity=1000, online=True, chunk=8)
    fill(replay, 12, workers=2)  # each worker completed windows starting at 0 and 5
    assert replay.stats()["online_queue"] == 4
    batch = replay.sample(3)
    check_windows(batch, 5)
    served = [(int(w), int(p)) for w, p in batch["vector"][:, 0]]
    # Queued in the order the windows completed: worker 0 then 1 at step 4, again at step 9.
    assert served == [(0, 0), (1, 0), (0, 5)]
    batch = replay.sample(2)
    assert tuple(batch["vector"][0, 0].astype(int)) == (1, 5)
    assert replay.stats()["online_queue"] == 0
    fill_more = [make_step(0, p) for p in range(12, 15)]
    for step in fill_more:
        replay.add(step, 0)
    assert replay.stats()["online_queue"] == 1  # window 10..14 of worker 0


def test_uniform_coverage_of_all_windows():
    replay = Replay(length=4, capacity=1000, online=False, chunk=8, seed=1)
    fill(replay, 20, workers=2)
    windows = 2 * (20 - 4 + 1)
    counts = {}
    draws = 20_000
    batch = replay.sample(draws)
    for worker, position in batch["vector"][:, 0].astype(int):
        counts[(worker, position)] = counts.get((worker, position), 0) + 1
    assert len(counts) == windows
    expected = draws / windows
    observed = np.array(list(counts.values()))
    chi2 = (((observed - expected) ** 2) / expected).sum()
    assert chi2 < windows + 5 * np.sqrt(2 * windows), chi2  # about 5 sigma of the chi-square


def test_update_writes_through_and_skips_evicted_steps():
    replay = Replay(length=5, capacity=30, online=False, chunk=4)
    fill(replay, 30)
    batch = replay.sample(8)
    new = np.random.default_rng(0).normal(size=(8, 5, 3)).astype(np.float32)
    replay.update({"stepid": batch["stepid"], "dyn/deter": new})
    for _ in range(5):
        again = replay.sample(64)
        for row in range(64):
            for t in range(5):
                hit = np.argwhere(batch["stepid"] == again["stepid"][row, t])
                if len(hit):
                    b, s = hit[-1]
                    np.testing.assert_array_equal(again["dyn/deter"][row, t], new[b, s])
    # Evicted steps are ignored; unknown keys and wrong shapes are errors naming the key.
    old = batch["stepid"].copy()
    fill_more = [make_step(0, p) for p in range(30, 60)]
    for step in fill_more:
        replay.add(step, 0)
    replay.update({"stepid": old, "dyn/deter": new})
    with pytest.raises(KeyError, match="dyn/unknown"):
        replay.update({"stepid": old, "dyn/unknown": new})
    with pytest.raises(ValueError, match="dyn/deter"):
        replay.update({"stepid": old, "dyn/deter": new[:, :, :2]})


def test_add_rejects_changed_keys_and_shapes():
    replay = Replay(length=2, capacity=100, chunk=4)
    replay.add(make_step(0, 0))
    step = make_step(0, 1)
    del step["action"]
    with pytest.raises(KeyError, match="action"):
        replay.add(step)
    step = make_step(0, 1)
    step["vector"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="vector"):
        replay.add(step)


def test_sample_before_enough_steps_explains():
    replay = Replay(length=10, capacity=100, online=False)
    fill(replay, 5)
    with pytest.raises(ValueError, match="10 consecutive steps"):
        replay.sample(1)


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    replay = Replay(length=5, capacity=70, online=True, chunk=8, seed=3)
    fill(replay, 40, workers=2, episode_length=7)  # 80 added, 10 evicted
    replay.sample(1)  # leave part of the online queue unconsumed
    replay.update({"stepid": np.array([[75, 76]]), "dyn/deter": np.ones((1, 2, 3), np.float32)})
    replay.save(tmp_path / "replay")
    restored = Replay(length=5, capacity=70, online=True, chunk=8, seed=99)
    restored.load(tmp_path / "replay")
    assert len(restored) == len(replay) == 70
    assert restored.stats() == replay.stats()
    for _ in range(4):
        a, b = replay.sample(6), restored.sample(6)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # Both continue identically: same stepids, same queue.
    for position in range(40, 50):
        for worker in range(2):
            replay.add(make_step(worker, position), worker)
            restored.add(make_step(worker, position), worker)
    a, b = replay.sample(12), restored.sample(12)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_save_is_incremental(tmp_path):
    replay = Replay(length=4, capacity=1000, online=False, chunk=8)
    fill(replay, 40)
    folder = tmp_path / "replay"
    replay.save(folder)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    assert len(mtimes) == 5
    time.sleep(0.01)
    replay.add(make_step(0, 40), 0)  # a new chunk; the 5 full ones are unchanged
    replay.save(folder)
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    assert len(after) == 6 and all(after[name] == mtime for name, mtime in mtimes.items())
    # A new folder hard-links unchanged chunks from the previous save instead of rewriting them.
    replay.update({"stepid": np.array([[0]]), "dyn/deter": np.ones((1, 1, 3), np.float32)})
    replay.save(tmp_path / "next", previous=folder)
    linked = [p for p in (tmp_path / "next").glob("*.npz") if p.stat().st_nlink > 1]
    assert len(linked) == 5  # chunk 0 changed, the rest are shared
    restored = Replay(length=4, capacity=1000, online=False, chunk=8)
    restored.load(tmp_path / "next")
    np.testing.assert_array_equal(restored.sample(3)["vector"].shape, (3, 4, 2))


def test_crash_during_save_leaves_previous_save_loadable(tmp_path, monkeypatch):
    folder = tmp_path / "replay"
    replay = Replay(length=4, capacity=1000, online=False, chunk=8, seed=5)
    fill(replay, 20)
    replay.save(folder)
    expected = Replay(length=4, capacity=1000, online=False, chunk=8)
    expected.load(folder)
    reference = expected.sample(5)

    fill_more = [make_step(0, p) for p in range(20, 40)]
    for step in fill_more:
        replay.add(step, 0)
    replay.update({"stepid": np.array([[1, 2]]), "dyn/deter": np.ones((1, 2, 3), np.float32)})
    calls = []
    real_replace = os.replace

    def crash_on_second_file(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second_file)
    with pytest.raises(OSError, match="simulated crash"):
        replay.save(folder)
    monkeypatch.setattr(os, "replace", real_replace)
    # Leftovers of an interrupted save: temp files, a half-written index, a stray temp folder.
    (folder / f"{INDEX}.tmp").write_text('{"format": 1, "trunc')
    (folder / "tmp-123").mkdir()
    (folder / "tmp-123" / "junk.npz").write_bytes(b"partial")
    restored = Replay(length=4, capacity=1000, online=False, chunk=8)
    restored.load(folder)
    assert len(restored) == 20
    again = restored.sample(5)
    for key in reference:
        np.testing.assert_array_equal(again[key], reference[key], err_msg=key)
    # The next successful save cleans the leftover files up and loads fine.
    replay.save(folder)
    assert not list(folder.glob("*.tmp"))
    restored.load(folder)
    assert len(restored) == 40 and json.loads((folder / INDEX).read_text())["next_stepid"] == 40


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        Replay(4, 100).load(tmp_path)
    replay = Replay(length=4, capacity=100, chunk=8)
    fill(replay, 10)
    replay.save(tmp_path)
    with pytest.raises(ValueError, match="replay.chunk 8"):
        Replay(4, 100, chunk=16).load(tmp_path)


def test_memory_estimate_and_bytes_per_step():
    replay = Replay(length=65, capacity=5_000_000)
    step = {"image": np.zeros((64, 64, 3), np.uint8), "deter": np.zeros(4096, np.float32), "log/x": 1.0}
    assert replay.bytes_per_step(step) == 64 * 64 * 3 + 4 * 4096 + 24
    text = replay.memory_estimate(step)
    assert text.startswith("capacity 5,000,000 steps x 28.7 KB = 143 GB"), text


def test_sampling_is_fast():
    replay = Replay(length=65, capacity=100_000, online=False, chunk=1024)
    step = make_step(0, 0)
    step["image"] = np.ones((64, 64, 3), np.uint8)
    for position in range(4000):
        replay.add(step, position % 4)
    replay.sample(16)
    best = min(_timed(lambda: replay.sample(16)) for _ in range(30))
    assert best < 0.005, f"sampling 16 x 65 took {best * 1e3:.2f} ms"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
