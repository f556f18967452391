"""What a run prints for its user: quiet framework start-up, the backend line, the end-of-run summary.

quiet_framework_logs()            # first thing in an entry point, before TensorFlow is imported
print(f"Backend: {backend_line()}")
print(summary(logdir, status="done", wall_seconds=63.2), file=sys.stderr)
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# C++ start-up lines of TensorFlow, XLA and CUDA that say nothing a user can act on. TensorFlow logs
# the oneDNN notice through absl before its log level is read, so TF_CPP_MIN_LOG_LEVEL cannot hide it.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on|cpu_feature_guard"
    r"|To enable the following instructions|rebuild TensorFlow with the appropriate compiler flags"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|TF-TRT Warning|successful NUMA node read|could not open file to read NUMA node"
)
_filtering = False


def quiet_framework_logs() -> None:
    """Keep TensorFlow's C++ start-up messages (oneDNN notices, CUDA registration warnings, absl's
    "log messages before absl::InitializeLog()") out of the console.

    Only when the user has not set ``TF_CPP_MIN_LOG_LEVEL``: then it defaults to 2 (errors still
    show) and ``framework_noise_filtered`` drops the lines that level cannot reach. Must run before
    TensorFlow is imported.
    """
    global _filtering
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        _filtering = True


@contextlib.contextmanager
def framework_noise_filtered() -> Iterator[None]:
    """Inside, what native code writes to stderr (file descriptor 2) is held back; on exit it is
    written out without the ``NOISE`` lines. Does nothing unless ``quiet_framework_logs`` chose to."""
    if not _filtering:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not NOISE.search(line)))
            sys.stderr.flush()


def backend_line() -> str:
    """The Keras backend and device in use (``tensorflow on CPU``, ``jax on gpu:0 (NVIDIA H200)``).

    An agent that brought no Keras in (the random agent) computes with numpy alone.
    """
    if "keras" not in sys.modules:
        return "none (this agent computes with numpy)"
    with framework_noise_filtered():  # the first device query loads CUDA's libraries
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
