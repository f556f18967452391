"""A run repeats exactly for its seed: the same episodes and the same losses, through the CLI.

On the CPU with one thread per process, as CI and the learning tests run: which also makes a learning
test's outcome a property of the code rather than of the draw. (With more threads, TensorFlow's oneDNN
kernels split reductions by thread and runs differ by rounding from the first updates on.)
"""

from __future__ import annotations

from pathlib import Path

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
    episodes, losses = run(tmp_path / "a", seed=5)
    assert len(episodes) >= 20 and len(losses) >= 20, (len(episodes), len(losses))
    again = run(tmp_path / "b", seed=5)
    assert again == (episodes, losses)
    other_episodes, other_losses = run(tmp_path / "c", seed=6)
    assert other_losses != losses
