"""After a SIGKILL and a resume, every record of the run tells one timeline: the checkpoint's.

bsuite's CSV (and its counters) and the TensorBoard events must drop what the killed process wrote
after its last checkpoint, as metrics.jsonl and scores.jsonl do.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamer_tf.run import metrics
from dreamer_tf.run.checkpoint import Checkpoint, CheckpointError
from dreamer_tf.run.metrics import read_jsonl

# The random agent: no Keras model is built.
pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]
CSV = "bsuite/bsuite_id_-_catch-0.csv"


def cli(logdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "dreamer_tf.run.train", "--task", "bsuite_catch/0", "--agent", "random",
        "--configs", "bsuite", "debug", "--run.envs", "1", "--run.progress", "false",
        "--run.log_every", "0.05", "--logdir", str(logdir), *extra,
    ]  # fmt: skip


def checkpoint_step(logdir: Path) -> int | None:
    try:
        state = Checkpoint(logdir / "checkpoint").load()
    except (CheckpointError, OSError):
        return None  # caught between the renames of a save
    return None if state is None else int(state["loop"]["env_steps"])


def read_events(logdir: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in the run's TensorBoard event files, none torn."""
    paths = sorted(logdir.glob("events.out.tfevents.*"))
    return [event for path in paths for event in metrics.read_events(path, strict=True)]


def assert_one_timeline(logdir: Path) -> None:
    scores = read_jsonl(logdir / "scores.jsonl")
    steps = [row["step"] for row in scores]
    assert steps == sorted(set(steps)), "scores.jsonl holds repeated or unordered episodes"
    # bsuite counts transitions (the reset observation is not one); scores count observations.
    bsuite_steps = [0]
    for row in scores:
        bsuite_steps.append(bsuite_steps[-1] + row["episode/length"] - 1)
    returns = [0.0]
    for row in scores:
        returns.append(returns[-1] + row["episode/score"])
    with open(logdir / CSV, newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows
    for row in rows:
        episode = int(row["episode"])
        assert episode <= len(scores), f"the CSV has episode {episode}, scores.jsonl {len(scores)} episodes"
        assert int(row["steps"]) == bsuite_steps[episode], (row, bsuite_steps[episode])
        assert float(row["total_return"]) == pytest.approx(returns[episode]), row
    counters = json.loads((logdir / (CSV + ".counters.json")).read_text())
    assert (counters["episode"], counters["steps"]) == (len(scores), bsuite_steps[-1]), counters

    metrics = read_jsonl(logdir / "metrics.jsonl")
    expected = sorted(
        (row["step"], key, float(struct.unpack("<f", struct.pack("<f", value))[0]))
        for row in metrics
        for key, value in row.items()
        if key != "step" and isinstance(value, (int, float))
    )
    assert sorted(read_events(logdir)) == expected, "TensorBoard and metrics.jsonl disagree"


def test_bsuite_csv_and_tensorboard_follow_the_checkpoint_after_a_sigkill(tmp_path):
    logdir = tmp_path / "run"
    process = subprocess.Popen(
        cli(logdir, "--run.steps", "1e8", "--run.save_every", "1.0"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (checkpoint_step(logdir) or 0) > 0:  # a periodic checkpoint past the first
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.05)
        time.sleep(0.5)  # half of save_every: episodes and metric rows after the checkpoint
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    saved = checkpoint_step(logdir)
    killed_scores = read_jsonl(logdir / "scores.jsonl")
    assert any(row["step"] > saved for row in killed_scores), "nothing was written after the checkpoint"
    assert any(step > saved for step, _, _ in read_events(logdir))

    result = subprocess.run(
        cli(logdir, "--run.steps", str(saved + 500)), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"at env step {saved}" in result.stderr
    assert_one_timeline(logdir)


def test_resume_drops_tensorboard_events_past_the_checkpoint_and_a_torn_record(tmp_path):
    from dreamer_tf.run.metrics import Logger

    logger = Logger(tmp_path, progress=False)
    for step in range(1, 6):
        logger.step = step
        logger.add({"loss": float(step)})
        logger.write()
    logger.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    with open(events, "ab") as file:
        file.write(b"\x40\x00\x00\x00\x00\x00\x00\x00torn")  # a kill in the middle of a record
    Logger(tmp_path, progress=False).resume(3)
    assert [(step, value) for step, _, value in read_events(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert [row["step"] for row in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3]
