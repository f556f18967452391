"""Proof that the PPO baseline learns, with its one fixed configuration, through the CLI.

Each run is ``python -m dreamer_tf.train --agent ppo`` in a subprocess (the backend comes from
``KERAS_BACKEND``), split into two chunks: the second resumes from the first's checkpoint (weights,
optimizer, return normaliser, RNG), so a resume that lost anything shows up as a failure to learn.
Flags set only the run (env count, steps, in-process envs), never a PPO hyperparameter.
Thresholds are fixed: if a change makes a test fail, fix the agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RUN_FLAGS = ["--agent", "ppo", "--run.parallel", "none", "--run.progress", "false"]


def train(logdir: Path, task: str, configs: list[str], steps: int, *flags: str) -> None:
    command = [sys.executable, "-m", "dreamer_tf.train", "--task", task, *RUN_FLAGS]
    command += ["--configs", *configs] if configs else []
    command += ["--logdir", str(logdir), "--run.steps", str(steps), *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def scores(logdir: Path) -> list[dict]:
    lines = (logdir / "scores.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def check_one_curve(records: list[dict], first: int, steps: int) -> None:
    assert len(records) > first  # the second chunk added episodes
    record_steps = [r["step"] for r in records]
    assert record_steps == sorted(record_steps) and record_steps[-1] <= steps  # continued, no duplicates


def report(name: str, records: list[dict], seconds: float, window: int) -> None:
    values = [r["episode/score"] for r in records]
    bins = range(0, len(values), max(1, len(values) // 8))
    curve = ", ".join(
        f"{records[min(i + window, len(records)) - 1]['step']}: {np.mean(values[i : i + window]):+.2f}"
        for i in bins
    )
    print(f"\n{name}: {len(values)} episodes in {seconds:.0f} s; mean of {window} episodes at step {curve}")


def test_ppo_solves_cartpole(tmp_path):
    # CartPole-v1 pays 1 per step, at most 500; a random policy averages about 22.
    flags = ["--run.envs", "8"]
    start = time.time()
    train(tmp_path, "gym_CartPole-v1", [], 50_000, *flags)
    first = len(scores(tmp_path))
    train(tmp_path, "gym_CartPole-v1", [], 120_000, *flags)  # resumes the first chunk
    records = scores(tmp_path)
    report("cartpole", records, time.time() - start, 20)
    check_one_curve(records, first, 120_000)
    last = np.mean([r["episode/score"] for r in records[-20:]])
    assert last >= 450, f"mean return of the last 20 episodes {last:.1f} < 450"
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    trained = [m for m in metrics if "train/loss/policy" in m]
    keys = ("loss/value", "entropy", "approx_kl", "clip_frac", "explained_variance", "opt/grad_norm")
    assert trained and all(f"train/{key}" in trained[-1] for key in keys), trained[-1:]
    assert trained[-1]["counter/updates"] > 0
    assert not (tmp_path / "checkpoint" / "latest" / "replay").exists()  # on-policy: no replay buffer


def test_ppo_learns_catch(tmp_path):
    # bsuite catch: a random policy averages about -0.6, the best possible is +1.
    flags = ["--run.envs", "4"]
    start = time.time()
    train(tmp_path, "bsuite_catch/0", ["bsuite"], 8_000, *flags)
    first = len(scores(tmp_path))
    train(tmp_path, "bsuite_catch/0", ["bsuite"], 20_000, *flags)
    records = scores(tmp_path)
    report("catch", records, time.time() - start, 100)
    check_one_curve(records, first, 20_000)
    last = np.mean([r["episode/score"] for r in records[-100:]])
    assert last >= 0.7, f"mean return of the last 100 episodes {last:.2f} < 0.7"
