"""What a run prints for its user: quiet framework start-up, the backend line, the end-of-run summary.

quiet_framework_logs()            # first thing in an entry point, before TensorFlow is imported
print(f"Backend: {backend_line()}")
print(summary(logdir, status="done", wall_seconds=63.2), file=sys.stderr)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def quiet_framework_logs() -> None:
    """Keep TensorFlow's C++ start-up messages (oneDNN notices, CUDA registration warnings, absl's
    "log messages before absl::InitializeLog()") out of the console.

    Only sets defaults: a ``TF_CPP_MIN_LOG_LEVEL`` the user exported is kept. Level 2 still shows
    errors. Must run before TensorFlow is imported; it has no effect afterwards.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def backend_line() -> str:
    """The Keras backend and device in use (``tensorflow on CPU``, ``jax on gpu:0 (NVIDIA H200)``).

    An agent that brought no Keras in (the random agent) computes with numpy alone.
    """
    if "keras" not in sys.modules:
        return "none (this agent computes with numpy)"
    from dreamer_tf.backend import describe_device

    return describe_device()


def summary(logdir: str | Path, status: str, wall_seconds: float) -> str:
    """The end-of-run lines: steps, updates, wall time, last scores and where the files are.

    Read from the run folder's records, so it shows the same numbers a user finds there.
    """
    from dreamer_tf.run.checkpoint import Checkpoint
    from dreamer_tf.run.metrics import MEDIA_DIR, METRICS_FILE, SCORES_FILE, read_jsonl

    logdir = Path(logdir)
    metrics = read_jsonl(logdir / METRICS_FILE)
    scores = [row["episode/score"] for row in read_jsonl(logdir / SCORES_FILE)]
    step = max((row["step"] for row in metrics), default=0)
    updates = next((row["counter/updates"] for row in reversed(metrics) if "counter/updates" in row), 0)
    evaluation = next((row for row in reversed(metrics) if "eval_episode/score" in row), None)
    minutes, seconds = divmod(int(round(wall_seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    lines = [
        f"Run {status}: {step} env steps, {int(updates)} updates, {hours}:{minutes:02d}:{seconds:02d} wall time.",
    ]
    if scores:
        last = ", ".join(f"{s:.4g}" for s in scores[-5:])
        lines.append(f"  Last scores: {last} (of {len(scores)} episodes)")
    if evaluation is not None:
        lines.append(
            f"  Last evaluation: {evaluation['eval_episode/score']:.4g} at env step {evaluation['step']}"
        )
    checkpoint = Checkpoint(logdir / "checkpoint")
    lines.append(f"  Run folder: {logdir}")
    if checkpoint.exists():
        lines.append(f"  Checkpoint: {checkpoint.latest}")
    lines.append(f"  Metrics:    {logdir / METRICS_FILE} (and {SCORES_FILE})")
    media = logdir / MEDIA_DIR
    if media.is_dir() and any(media.iterdir()):
        lines.append(f"  Media:      {media}")
    return "\n".join(lines)
