"""A run repeats for its seed: the same episodes and the same losses up to float32 rounding, through the CLI.

On the CPU with one thread per process, as CI and the learning tests run. Exact equality of the
losses does not hold on TensorFlow: under a loaded CI machine two runs of one seed differed by about
1e-7 relative in `opt/grad_norm` from the second logged update on (same episodes), as oneDNN kernels
can round differently with the memory layout of their inputs. With more threads, its kernels split
reductions by thread and runs drift further.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamer_tf.run.metrics import read_jsonl
from tests.helpers.cli_runs import scores, train

# bsuite catch leaves its seed to the operating system unless the run seeds it; one update per env step.
FLAGS = ["--run.envs", "2", "--run.parallel", "none", "--run.train_ratio", "32", "--run.log_every", "0"]


def run(logdir: Path, seed: int) -> tuple[list[dict], list[dict]]:
    train(logdir, "bsuite_catch/0", ["bsuite", "debug"], 300, "--seed", str(seed), *FLAGS, timeout=600)
    rows = read_jsonl(logdir / "metrics.jsonl")
    losses = [
        {k: v for k, v in row.items() if k == "step" or k.startswith("train/")}
        for row in rows
        if any(k.startswith("train/loss/") for k in row)
    ]
    return scores(logdir), losses


def test_a_run_repeats_exactly_for_its_seed(tmp_path, monkeypatch):
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.setenv(name, "1")  # the runs' environment (cli_runs.train passes it on)
    # oneDNN's kernels round by the memory layout of their inputs (see above); Eigen's do not.
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    episodes, losses = run(tmp_path / "a", seed=5)
    assert len(episodes) >= 20 and len(losses) >= 20, (len(episodes), len(losses))
    again = run(tmp_path / "b", seed=5)
    assert again[0] == episodes
    assert [row["step"] for row in again[1]] == [row["step"] for row in losses]
    for mine, theirs in zip(again[1], losses):
        assert mine.keys() == theirs.keys()
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-7), mine["step"]
    other_episodes, other_losses = run(tmp_path / "c", seed=6)
    assert other_losses != losses
