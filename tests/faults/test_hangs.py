"""A hung environment: SIGTERM still ends the run within seconds with a checkpoint, and the in-process
environments get the same ``run.episode_timeout`` as subprocess ones.

Each run is a real CLI process (``python -m tests.helpers.faulty_envs hang ...``) whose environment 0
hangs in ``step`` after 30 steps; the test waits until it hangs, then signals it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamer_tf.run.checkpoint import Checkpoint
from dreamer_tf.run.loop import read_status

pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]
HANG_AFTER = 30


def start_hanging_run(tmp_path: Path, parallel: str, envs: int, *flags: str) -> subprocess.Popen:
    marker = tmp_path / "hung"
    command = [sys.executable, "-m", "tests.helpers.faulty_envs", "hang", str(HANG_AFTER), str(marker), "--"]
    command += ["--agent", "random", "--configs", "debug", "--run.progress", "false"]
    command += [
        "--logdir",
        str(tmp_path / "run"),
        "--run.parallel",
        parallel,
        "--run.envs",
        str(envs),
        *flags,
    ]
    log = open(tmp_path / "log", "w")  # noqa: SIM115 - the process writes it after this returns
    # A session of its own, so that cleanup can end the run and its workers together.
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert process.poll() is None, f"the run ended before it hung:\n{tail(tmp_path)}"
        assert time.monotonic() < deadline, f"the run never reached the hanging step:\n{tail(tmp_path)}"
        time.sleep(0.2)
    time.sleep(0.5)  # the main process is now waiting for the hung step
    return process


def wait_or_kill(process: subprocess.Popen, seconds: float, tmp_path: Path) -> float:
    """Seconds until ``process`` exited; past ``seconds`` it (and its workers) is killed and the test fails."""
    start = time.monotonic()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"the run did not exit within {seconds} s:\n{tail(tmp_path)}") from None
    return time.monotonic() - start


def tail(tmp_path: Path) -> str:
    return "\n".join((tmp_path / "log").read_text().splitlines()[-25:])


@pytest.mark.parametrize("parallel,envs", [("none", 1), ("process", 2)])
def test_sigterm_ends_a_run_whose_environment_hangs_with_a_checkpoint(tmp_path, parallel, envs):
    process = start_hanging_run(tmp_path, parallel, envs)
    hung_pid = int((tmp_path / "hung").read_text().split()[1])
    process.send_signal(signal.SIGTERM)
    # Before: in-process, the handler only set a flag that the hung step never let the loop read; with
    # workers, the wait for the answer ran on to run.episode_timeout (180 s).
    seconds = wait_or_kill(process, 20, tmp_path)
    assert process.returncode == 128 + signal.SIGTERM, tail(tmp_path)
    assert seconds < 15
    status = read_status(tmp_path / "run")
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM"
    # The hung step was never counted: the checkpoint holds the state before it.
    assert status["step"] == HANG_AFTER * envs
    assert Checkpoint(tmp_path / "run" / "checkpoint").exists()
    assert "Saved a checkpoint at env step" in tail(tmp_path)
    if parallel == "process":
        assert not alive(hung_pid), "the hung worker outlived the run"


def test_in_process_environments_get_the_episode_timeout(tmp_path):
    process = start_hanging_run(tmp_path, "none", 1, "--run.episode_timeout", "2")
    # Before: no timeout in this process, so the run hung for good.
    seconds = wait_or_kill(process, 20, tmp_path)
    assert process.returncode not in (0, None)
    assert seconds < 10
    status = read_status(tmp_path / "run")
    assert status["status"] == "failed"
    assert "Environment 0 did not step within 2 seconds" in status["error"]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
