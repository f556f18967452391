"""``benchmarks/chaos.py``: a run killed with SIGKILL again and again (some kills inside checkpoint
writes) resumes every time with a checkpoint that loads and records without repeats or rows of a
discarded timeline. CI runs a few kills; the note of each release runs 100."""

from __future__ import annotations

import json

import pytest

from dreamer_tf.harness import chaos
from dreamer_tf.run.metrics import read_events
from dreamer_tf.run.trackers import TensorBoardOutput

# The kill-safety lives in the loop, the checkpoint format and the records, not in the backend (each
# backend's agent save/load round trip is in tests/component/test_agent.py).
pytestmark = pytest.mark.backend_independent


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_run_killed_four_times_resumes_intact(tmp_path, capsys):
    code = chaos.main(["--kills", "4", "--logdir", str(tmp_path), "--seed", "1"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["kills"] == 4 and result["in_write"] >= 1, result  # two kills aimed inside a save
    assert result["resumed"] == 4, result  # every round after the first resumed from a checkpoint
    assert result["corrupt"] == 0 and result["backwards"] == 0, result
    assert result["duplicates"] == 0, result["duplicates_by_file"]
    assert code == 0


def test_the_event_reader_reads_what_the_writer_wrote_and_spots_a_torn_record(tmp_path):
    writer = TensorBoardOutput(tmp_path, {})
    writer.scalars(5, {"train/loss/rep": 1.5, "fps/train": 3.0})
    writer.scalars(9, {"train/loss/rep": 1.25})
    writer.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    events = [(5, "train/loss/rep", 1.5), (5, "fps/train", 3.0), (9, "train/loss/rep", 1.25)]
    assert read_events(path, strict=True) == events
    path.write_bytes(path.read_bytes()[:-3])  # a kill in the middle of the last record
    assert read_events(path) == events[:2]
    with pytest.raises(ValueError, match="torn record"):
        read_events(path, strict=True)


def test_record_checks_find_repeats_and_rows_of_a_discarded_timeline(tmp_path):
    rows = [
        {"step": 10, "episode/score": 1.0, "episode/length": 10},
        {"step": 20, "episode/score": -1.0, "episode/length": 10},
    ]
    (tmp_path / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + rows[1:]))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 10, "train/loss/rep": 1.0}) + "\n")
    writer = TensorBoardOutput(tmp_path, {})
    writer.scalars(10, {"train/loss/rep": 1.0})
    writer.scalars(30, {"train/loss/rep": 0.5})  # a row metrics.jsonl dropped on resume
    writer.close()
    (tmp_path / "bsuite").mkdir()
    (tmp_path / "bsuite" / "bsuite_id_-_catch-0.csv").write_text(
        "steps,episode,total_return,episode_len,episode_return,total_regret\n"
        "9,1,1.0,9,1.0,0.0\n"
        "18,2,2.0,9,1.0,0.0\n"  # the second episode returned -1 in scores.jsonl
    )
    faults = chaos.record_faults(tmp_path)
    assert faults == {"scores.jsonl": 1, "metrics.jsonl": 0, "bsuite csv": 1, "tensorboard": 1}
