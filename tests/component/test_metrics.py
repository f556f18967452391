"""Logger records, the aggregator and the TensorBoard events."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreamer_tf.run.metrics import Aggregator, Logger, read_jsonl

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


def test_aggregator_reductions():
    agg = Aggregator()
    agg.add({"loss": 1.0, "lr": np.float32(0.5)})
    agg.add({"loss": np.array(3.0), "lr": 1.5})
    agg.add({"steps": 2}, agg="sum")
    agg.add({"steps": 3}, agg="sum")
    agg.add({"peak": 4.0}, agg="max")
    agg.add({"peak": 1.0}, agg="max")
    assert agg.result(prefix="train") == {
        "train/loss": 2.0,
        "train/lr": 1.0,
        "train/steps": 5.0,
        "train/peak": 4.0,
    }
    assert agg.result() == {}
    with pytest.raises(ValueError, match="reduction"):
        agg.add({"x": 1}, agg="sum")
        agg.add({"x": 1}, agg="max")


def test_logger_files_append_across_sessions(tmp_path):
    logger = Logger(tmp_path, total_steps=100, progress=True)
    logger.resume(0)
    logger.episode(score=np.float32(3.5), length=7, step=10, **{"log/coins/sum": 2.0})
    logger.step = 10
    logger.add({"loss/rep": np.float32(0.25), "note": "text"}, prefix="train")
    logger.add({"fps/train": 2})
    logger.write()
    logger.write()  # nothing staged: no row
    logger.progress(10, updates_per_s=1.0, env_per_s=50.0)
    logger.close()
    logger = Logger(tmp_path, progress=False)
    logger.resume(10)
    logger.episode(score=1.0, length=2, step=20)
    logger.close()
    scores = read_jsonl(tmp_path / "scores.jsonl")
    assert scores == [
        {"step": 10, "episode/score": 3.5, "episode/length": 7, "episode/log/coins/sum": 2.0},
        {"step": 20, "episode/score": 1.0, "episode/length": 2},
    ]
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert metrics == [{"step": 10, "train/loss/rep": 0.25, "train/note": "text", "fps/train": 2}]
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_tensorboard_reads_the_event_file(tmp_path):
    tf = pytest.importorskip("tensorflow")
    logger = Logger(tmp_path, progress=False)
    for step in (5, 10):
        logger.step = step
        logger.add({"train/loss/rep": step / 10, "fps/env": 1e40, "text": "skipped"})
        logger.write()
    logger.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    seen = {}
    for record in tf.data.TFRecordDataset(str(path)):  # checks both CRCs of every record
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            seen[(event.step, value.tag)] = value.simple_value
        if event.file_version:
            assert event.file_version == "brain.Event:2"
    assert seen[(5, "train/loss/rep")] == pytest.approx(0.5)
    assert seen[(10, "train/loss/rep")] == pytest.approx(1.0)
    assert seen[(10, "fps/env")] == float("inf")
    assert (10, "text") not in seen
