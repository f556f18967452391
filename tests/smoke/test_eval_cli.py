"""``python -m dreamer_tf.eval`` on finished random-agent runs: records, video, read-only, errors;
and a finished run resumed with ``--run.eval_every`` evaluates its final agent."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dreamer_tf.run.lock import RunLock
from dreamer_tf.run.metrics import read_jsonl

# The random agent, the environments, checkpoints and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]
STEPS = 24
TRAIN = ["-m", "dreamer_tf", "--task", "dummy_disc", "--agent", "random", "--configs", "debug"]
TRAIN += ["--run.progress", "false", "--env.dummy.length", "5", "--run.steps", str(STEPS)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240
    )


def _train(logdir: Path, *flags: str) -> subprocess.CompletedProcess:
    result = _run(*TRAIN, "--logdir", str(logdir), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: its SHA-256 and mtime."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("eval") / "run"
    _train(logdir)
    return logdir


def test_eval_writes_episodes_and_a_video_and_leaves_the_run_as_it_was(finished_run):
    before = _snapshot(finished_run)
    # A trainer holding the folder neither blocks the evaluation nor is blocked by it.
    with RunLock(finished_run):
        result = _run(
            "-m",
            "dreamer_tf.eval",
            "--logdir",
            str(finished_run),
            "--episodes",
            "3",
            "--envs",
            "2",
            "--video",
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 episodes" in result.stdout and "eval.jsonl" in result.stdout
    after = _snapshot(finished_run)
    new = sorted(set(after) - set(before))
    assert new == ["eval.jsonl", f"media/eval_sample_{STEPS:09d}.gif"]
    # Nothing that was there changed (run.lock was written by our own RunLock and released).
    changed = sorted(k for k in before if k != "run.lock" and before[k] != after[k])
    assert changed == []
    rows = read_jsonl(finished_run / "eval.jsonl")
    assert [r["kind"] for r in rows] == ["episode"] * 3 + ["summary"]
    assert {(r["env_step"], r["mode"], r["seed"]) for r in rows} == {(STEPS, "sample", 0)}
    assert all(r["score"] == 5.0 and r["length"] == 6 for r in rows[:3])
    assert rows[-1]["episodes"] == 3 and rows[-1]["score_mean"] == 5.0
    with Image.open(finished_run / "media" / f"eval_sample_{STEPS:09d}.gif") as gif:
        assert gif.n_frames == 6 and gif.size == (64, 64)  # the first episode: reset step plus 5


def test_eval_errors_are_one_line_and_write_nothing(tmp_path, finished_run):
    missing = _run("-m", "dreamer_tf.eval", "--logdir", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "does not exist" in missing.stderr and not (tmp_path / "nothing").exists()

    empty = tmp_path / "no-checkpoint"
    empty.mkdir()
    (empty / "config.yaml").write_text((finished_run / "config.yaml").read_text())
    result = _run("-m", "dreamer_tf.eval", "--logdir", str(empty))
    assert result.returncode == 2 and "no checkpoint" in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and sorted(p.name for p in empty.iterdir()) == [
        "config.yaml"
    ]

    corrupt = tmp_path / "corrupt"
    subprocess.run(["cp", "-a", str(finished_run), str(corrupt)], check=True)
    (corrupt / "eval.jsonl").unlink(missing_ok=True)
    state = corrupt / "checkpoint" / "latest" / "state.json"
    state.write_bytes(state.read_bytes()[:-2] + b"  ")
    before = _snapshot(corrupt)
    result = _run("-m", "dreamer_tf.eval", "--logdir", str(corrupt))
    assert result.returncode == 2 and "corrupt" in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and _snapshot(corrupt) == before


def test_resuming_a_finished_run_with_eval_every_evaluates_once(tmp_path):
    logdir = tmp_path / "run"
    _train(logdir)
    assert not [r for r in read_jsonl(logdir / "metrics.jsonl") if "eval_episode/score" in r]
    _train(logdir, "--run.eval_every", "10", "--run.eval_eps", "2")
    evals = [r for r in read_jsonl(logdir / "metrics.jsonl") if "eval_episode/score" in r]
    assert [(r["step"], r["eval_episode/episodes"], r["eval_episode/score"]) for r in evals] == [
        (STEPS, 2, 5.0)
    ]
    # The round was checkpointed: resuming again does not evaluate the same agent twice.
    _train(logdir, "--run.eval_every", "10", "--run.eval_eps", "2")
    assert len([r for r in read_jsonl(logdir / "metrics.jsonl") if "eval_episode/score" in r]) == 1
