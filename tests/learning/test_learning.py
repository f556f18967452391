"""Proof that DreamerV3 learns: small tasks trained through the CLI, in minutes on two cores.

Each run is ``python -m dreamer_tf.train`` in a subprocess (the backend comes from
``KERAS_BACKEND``), split into two chunks: the second resumes from the first's checkpoint
(weights, optimizer, normalisers, replay), so a resume that lost anything shows up as a
failure to learn. Thresholds are fixed: if a change makes a test fail, fix the agent.
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


def train(logdir: Path, task: str, configs: list[str], steps: int, *flags: str) -> None:
    command = [sys.executable, "-m", "dreamer_tf.train", "--task", task, "--configs", *configs]
    command += ["--logdir", str(logdir), "--run.steps", str(steps), "--run.progress", "false", *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]


def scores(logdir: Path) -> list[dict]:
    lines = (logdir / "scores.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def report(name: str, records: list[dict], seconds: float) -> None:
    values = [r["episode/score"] for r in records]
    curve = ", ".join(
        f"{records[min(i + 99, len(records) - 1)]['step']}: {np.mean(values[i : i + 100]):+.2f}"
        for i in range(0, len(values), 100)
    )
    print(f"\n{name}: {len(values)} episodes in {seconds:.0f} s; mean per 100 episodes at step {curve}")


def test_catch_reaches_half_the_maximum_return(tmp_path):
    # bsuite catch: a random policy averages about -0.6, the best possible is +1.
    # `small` (0.36M parameters) at one update per env step (train ratio 256 = batch 16 x 16).
    flags = ["--run.envs", "4", "--run.parallel", "none", "--run.train_ratio", "256"]
    start = time.time()
    train(tmp_path, "bsuite_catch/0", ["bsuite", "small"], 3000, *flags)
    first = len(scores(tmp_path))
    train(tmp_path, "bsuite_catch/0", ["bsuite", "small"], 6000, *flags)  # resumes the first chunk
    records = scores(tmp_path)
    report("catch", records, time.time() - start)
    assert len(records) > first
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and steps[-1] <= 6000  # one curve, continued, no duplicates
    last = np.mean([r["episode/score"] for r in records[-100:]])
    assert last >= 0.5, f"mean return of the last 100 episodes {last:.2f} < 0.5"


def test_continuous_actions_rise_clearly_above_random(tmp_path):
    # dummy_cont_match with one action dimension: each step shows a target in [-1, 1] and pays
    # 1 - |action - target| / 2. Per step a uniform random policy earns 2/3 on average and always
    # answering 0 earns 3/4; only a policy that reads the target (learned through the world model's
    # reward prediction) earns more.
    flags = ["--run.envs", "4", "--run.parallel", "none", "--run.train_ratio", "256"]
    flags += ["--env.dummy.image", "false", "--env.dummy.length", "25", "--env.dummy.dims", "1"]
    start = time.time()
    train(tmp_path, "dummy_cont_match", ["small"], 2000, *flags)
    train(tmp_path, "dummy_cont_match", ["small"], 4000, *flags)
    records = scores(tmp_path)
    report("cont_match", records, time.time() - start)
    per_step = [r["episode/score"] / (r["episode/length"] - 1) for r in records[-20:]]  # first step pays 0
    assert np.mean(per_step) >= 0.85, f"mean reward per step of the last 20 episodes {np.mean(per_step):.3f}"
