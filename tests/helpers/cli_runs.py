"""Training runs through the CLI for the learning tests: one subprocess per chunk, read back from disk.

``python -m dreamer_tf`` runs in a subprocess (the backend comes from ``KERAS_BACKEND``), so a
test's second chunk resumes from the first's checkpoint exactly as a user's rerun would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 5.0


def train(
    logdir: Path,
    task: str,
    configs: list[str],
    steps: int,
    *flags: str,
    timeout: int = 1800,
    stop_when: Callable[[list[dict]], bool] | None = None,
) -> list[dict] | None:
    """Train to ``steps`` env steps in a subprocess.

    ``stop_when(records)`` is asked every few seconds with the episodes of ``scores.jsonl`` so far;
    once it says yes the run gets SIGTERM, the user's way to stop it: it finishes its iteration (a few
    more episodes may end), saves a checkpoint and exits with 128 + 15. Returns the episodes that
    ``stop_when`` accepted, or None if the run reached ``steps``. The run's output goes to
    ``<logdir>-<steps>.log`` beside the run folder (a pipe could fill and stall it); a failure shows
    its tail.
    """
    command = [sys.executable, "-m", "dreamer_tf.run.train", "--task", task, "--run.progress", "false"]
    command += ["--configs", *configs] if configs else []
    command += ["--logdir", str(logdir), "--run.steps", str(steps), *flags]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # JAX compiles each chunk's train and policy steps again (tens of seconds each on the CPU); a
    # persistent compilation cache shared by this pytest process's runs lets later chunks reuse them.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(logdir.parent / "jax-cache"))
    log = logdir.parent / f"{logdir.name}-{steps}.log"
    deadline = time.monotonic() + timeout
    stopped = None
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"training to {steps} steps ran past {timeout} s:\n{_tail(log)}")
                records = scores(logdir, partial=True) if stop_when and stopped is None else []
                if records and stop_when(records):
                    process.send_signal(signal.SIGTERM)
                    stopped = records
                try:
                    process.wait(timeout=POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    expected = (0,) if stopped is None else (0, 128 + signal.SIGTERM)
    assert process.returncode in expected, f"exit {process.returncode}:\n{_tail(log)}"
    return stopped


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:]


def scores(logdir: Path, partial: bool = False) -> list[dict]:
    """The episodes of ``scores.jsonl``; ``partial``: of a running run (maybe no file yet, a torn last line)."""
    path = logdir / "scores.jsonl"
    if partial and not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if not partial:
                    raise
    return records


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
