"""Training runs through the CLI for the learning tests: one subprocess per chunk, read back from disk.

``python -m dreamer_tf.train`` runs in a subprocess (the backend comes from ``KERAS_BACKEND``), so a
test's second chunk resumes from the first's checkpoint exactly as a user's rerun would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def train(logdir: Path, task: str, configs: list[str], steps: int, *flags: str, timeout: int = 1800) -> None:
    command = [sys.executable, "-m", "dreamer_tf.train", "--task", task, "--run.progress", "false"]
    command += ["--configs", *configs] if configs else []
    command += ["--logdir", str(logdir), "--run.steps", str(steps), *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # JAX compiles each chunk's train and policy steps again (tens of seconds each on the CPU); a
    # persistent compilation cache shared by this pytest process's runs lets later chunks reuse them.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(logdir.parent / "jax-cache"))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]


def scores(logdir: Path) -> list[dict]:
    lines = (logdir / "scores.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def check_one_curve(records: list[dict], first: int, steps: int) -> None:
    """The second chunk added episodes and continued the first's curve: no duplicates, no overrun."""
    assert len(records) > first
    record_steps = [r["step"] for r in records]
    assert record_steps == sorted(record_steps) and record_steps[-1] <= steps


def report(name: str, records: list[dict], seconds: float, window: int, every: int | None = None) -> None:
    """Print the curve: the mean of ``window`` episodes every ``every`` episodes (default ``window``)."""
    values = [r["episode/score"] for r in records]
    curve = ", ".join(
        f"{records[min(i + window, len(records)) - 1]['step']}: {np.mean(values[i : i + window]):+.2f}"
        for i in range(0, len(values), max(1, every or window))
    )
    print(f"\n{name}: {len(values)} episodes in {seconds:.0f} s; mean of {window} episodes at step {curve}")
