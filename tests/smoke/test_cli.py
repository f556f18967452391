"""``python -m dreamer_tf`` end to end in subprocesses: run folder, errors, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamer_tf.config import Config
from dreamer_tf.run.checkpoint import Checkpoint
from dreamer_tf.run.metrics import read_jsonl

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]
BASE = ["--task", "dummy_disc", "--agent", "random", "--configs", "debug", "--run.progress", "false"]


def command(logdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dreamer_tf.run.train", *BASE, "--logdir", str(logdir), *extra]


def run_cli(logdir: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(logdir, *extra),
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_cli(logdir: Path, *extra: str) -> subprocess.Popen:
    # A session of its own, so that the environment workers can be cleaned up with the group.
    return subprocess.Popen(
        command(logdir, *extra),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(predicate, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"the run ended early:\n{process.stderr.read()}")
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.1)


def assert_records_consistent(logdir: Path) -> None:
    for name in ("metrics.jsonl", "scores.jsonl"):
        lines = (logdir / name).read_text().splitlines()
        rows = [json.loads(line) for line in lines]  # every line complete JSON
        steps = [row["step"] for row in rows]
        assert steps == sorted(steps), f"{name} steps go back: {steps}"
    score_steps = [row["step"] for row in read_jsonl(logdir / "scores.jsonl")]
    assert len(score_steps) == len(set(score_steps)), "duplicate episodes in scores.jsonl"


def test_train_writes_the_run_folder(tmp_path):
    logdir = tmp_path / "run"
    result = run_cli(logdir, "--run.steps", "300")
    assert result.returncode == 0, result.stderr
    assert "Task: dummy_disc" in result.stderr and "Replay memory" in result.stderr
    for name in ("config.yaml", "metrics.jsonl", "scores.jsonl", "status.json"):
        assert (logdir / name).exists(), name
    assert list(logdir.glob("events.out.tfevents.*"))
    assert (logdir / "checkpoint" / "latest" / "manifest.json").exists()
    status = json.loads((logdir / "status.json").read_text())
    assert status["status"] == "done" and status["step"] >= 300
    config = Config.load(logdir / "config.yaml")
    assert config.task == "dummy_disc" and config.agent_name == "random" and config.run.steps == 300
    assert config.logdir == str(logdir)
    scores = read_jsonl(logdir / "scores.jsonl")
    assert scores and {"step", "episode/score", "episode/length"} <= set(scores[0])
    metrics = read_jsonl(logdir / "metrics.jsonl")
    assert metrics[-1]["step"] == status["step"] and "fps/env" in metrics[-1]
    assert_records_consistent(logdir)

    # A changed model key is refused; a changed run key is accepted and recorded.
    refused = run_cli(logdir, "--run.steps", "300", "--agent.dyn.deter", "16")
    assert refused.returncode == 2
    assert "agent.dyn.deter" in refused.stderr and "different model config" in refused.stderr
    longer = run_cli(logdir, "--run.steps", "400")
    assert longer.returncode == 0, longer.stderr
    assert "run.steps: 300" in longer.stderr and "resuming" in longer.stderr
    assert Config.load(logdir / "config.yaml").run.steps == 400
    assert list(logdir.glob("config.before-*.yaml"))
    assert_records_consistent(logdir)


def test_unknown_task_is_explained(tmp_path):
    result = run_cli(tmp_path / "run", "--task", "dcm_walker_walk")
    assert result.returncode == 2
    assert "Unknown task 'dcm_walker_walk'" in result.stderr and "Domains:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_is_explained(tmp_path):
    result = run_cli(tmp_path / "run", "--run.stepz", "5")
    assert result.returncode == 2
    assert "Unknown config key 'run.stepz'" in result.stderr and "run.steps" in result.stderr
    assert "Traceback" not in result.stderr
    unknown_preset = run_cli(tmp_path / "run", "--configs", "dbug")
    assert unknown_preset.returncode == 2 and "Unknown preset 'dbug'" in unknown_preset.stderr
    unknown_agent = run_cli(tmp_path / "run", "--agent", "sac")
    assert unknown_agent.returncode == 2 and "Unknown agent 'sac'" in unknown_agent.stderr


def test_sigkill_then_rerun_resumes_from_the_checkpoint(tmp_path):
    logdir = tmp_path / "run"
    checkpoint = Checkpoint(logdir / "checkpoint")
    flags = ("--run.save_every", "0.3", "--run.log_every", "0.2")
    process = start_cli(logdir, "--run.steps", "1e7", *flags)
    try:
        wait_for(checkpoint.exists, 120, process)
        time.sleep(1.5)  # a few more saves, so the kill may land in the middle of one
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        kill_group(process)
        process.communicate()
    resumed_at = checkpoint.load()["loop"]["env_steps"]
    assert resumed_at > 0
    status = json.loads((logdir / "status.json").read_text())
    assert status["status"] == "running"  # what a killed run leaves behind

    target = resumed_at + 300
    result = run_cli(logdir, "--run.steps", str(target), *flags)
    assert result.returncode == 0, result.stderr
    assert f"at env step {resumed_at}" in result.stderr
    status = json.loads((logdir / "status.json").read_text())
    assert status["status"] == "done" and status["step"] >= target
    assert_records_consistent(logdir)
    assert not [p for p in (logdir / "checkpoint").iterdir() if p.name != "latest"]


def test_sigint_saves_a_checkpoint_and_exits(tmp_path):
    logdir = tmp_path / "run"
    process = start_cli(logdir, "--run.steps", "1e7", "--run.save_every", "-1")
    try:
        wait_for(lambda: (logdir / "scores.jsonl").exists(), 120, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        kill_group(process)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "Traceback" not in stderr
    status = json.loads((logdir / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == "SIGINT"
    state = Checkpoint(logdir / "checkpoint").load()
    assert state["loop"]["env_steps"] == status["step"]


@pytest.mark.parametrize("flag", ["--help"])
def test_help(flag):
    result = subprocess.run(
        [sys.executable, "-m", "dreamer_tf.run.train", flag],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert result.returncode == 0 and "--configs" in result.stdout and "--a.b value" in result.stdout
