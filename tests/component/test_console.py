"""What the CLI prints: the backend and device on the banner, no TensorFlow start-up noise, the
end-of-run summary; and ``status.json`` following the run's step while it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dreamer_tf.run import console

ROOT = Path(__file__).resolve().parents[2]


def test_the_banner_names_the_backend_and_framework_start_up_noise_stays_out(tmp_path):
    # Builds DreamerV3 (no update runs): on each backend the CI tests.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [
            sys.executable, "-m", "dreamer_tf", "--task", "dummy_disc", "--configs", "debug",
            "--env.dummy.image", "false", "--run.steps", "8", "--run.envs", "1", "--run.train_fill", "1000",
            "--run.progress", "false", "--logdir", str(tmp_path / "run"),
        ],  # fmt: skip
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"Backend: {os.environ['KERAS_BACKEND']} on " in result.stderr
    assert "keras default" not in result.stderr
    assert "oneDNN custom operations" not in result.stderr
    assert "absl::InitializeLog" not in result.stderr
    assert "Run done: 8 env steps, 0 updates" in result.stderr


@pytest.mark.backend_independent
def test_the_noise_filter_drops_framework_lines_and_keeps_the_rest(capfd, monkeypatch):
    monkeypatch.setattr(console, "_filtering", True)
    with console.framework_noise_filtered():
        os.write(
            2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        )
        os.write(2, b"I0000 00:00:1 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(2, b"E0000 something the user must see\n")
    err = capfd.readouterr().err
    assert err == "E0000 something the user must see\n"


@pytest.mark.backend_independent
def test_quiet_logs_keep_a_level_the_user_chose(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    monkeypatch.setattr(console, "_filtering", False)
    console.quiet_framework_logs()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" and not console._filtering
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    console.quiet_framework_logs()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2" and console._filtering


@pytest.mark.backend_independent
def test_status_json_follows_the_step_while_the_run_is_going(tmp_path):
    logdir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "dreamer_tf", "--task", "dummy_disc", "--agent", "random", "--configs",
            "debug", "--run.steps", "1e8", "--run.log_every", "0.2", "--run.save_every", "-1",
            "--run.progress", "false", "--logdir", str(logdir),
        ],  # fmt: skip
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    steps: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(steps) < 3:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, f"status.json steps seen: {steps}"
            try:
                status = json.loads((logdir / "status.json").read_text())
            except (FileNotFoundError, ValueError):
                status = None
            if status and status["status"] == "running" and status["step"] > (steps[-1] if steps else 0):
                steps.append(status["step"])
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert steps == sorted(steps) and steps[0] > 0
    assert "Run interrupted:" in err  # the summary after a stop, too
