"""Through the CLI with the ``debug`` preset: DreamerV3 on a Gymnasium task, PPO on one domain per kind of
space, and the install message of a domain whose package is missing (DMLab, MineRL).

Every benchmark domain trains DreamerV3 and PPO in the smoke sweep (tests/smoke/test_sweep.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer_tf.envs.catalog import domain_status
from dreamer_tf.run.metrics import read_jsonl

ROOT = Path(__file__).resolve().parents[2]

# The environments and the CLI are the same on both backends; the agent's backends are tested elsewhere.
pytestmark = pytest.mark.backend_independent

# Gymnasium is no benchmark domain, so the smoke sweep does not train it.
RUNS = [("gym_CartPole-v1", [], [])]
UNAVAILABLE = [("dmlab_explore_goal_locations_small", ["dmlab"]), ("minecraft_diamond", ["minecraft"])]


def run_cli(logdir: Path, task: str, configs: list[str], *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dreamer_tf.run.train", "--task", task, "--configs", *configs, "debug"]
    command += ["--logdir", str(logdir), "--run.steps", "200", "--run.envs", "1", "--run.progress", "false"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        command + list(flags), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("task, configs, flags", RUNS, ids=[run[0] for run in RUNS])
def test_domain_trains_through_the_cli(tmp_path, task, configs, flags):
    result = run_cli(tmp_path, task, configs, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "done" and status["step"] >= 200
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    trained = [row for row in metrics if any(key.startswith("train/loss/") for key in row)]
    assert trained, f"no training update was logged for {task}"
    losses = [value for key, value in trained[-1].items() if key.startswith("train/loss/")]
    assert all(abs(value) < 1e6 for value in losses), trained[-1]  # finite and sane


@pytest.mark.parametrize("task, configs", UNAVAILABLE, ids=[run[0] for run in UNAVAILABLE])
def test_missing_domain_package_is_explained(tmp_path, task, configs):
    if domain_status(task.split("_")[0])[0]:
        pytest.skip(f"{task} is installed on this machine")
    result = run_cli(tmp_path, task, configs)
    assert result.returncode == 2
    assert "install" in result.stderr.lower() and "Traceback" not in result.stderr


# PPO on one domain per kind of space: images (CNN, discrete), a rank-2 vector board, continuous
# actions, vectors + images with continuous actions, and Gymnasium. `debug` shrinks the networks and the
# rollout (16 steps), so 200 env steps run several updates.
PPO_RUNS = [
    ("atari100k_pong", ["atari100k"]),
    ("bsuite_catch/0", ["bsuite"]),
    ("dmc_cartpole_balance", ["dmc_proprio"]),
    ("dummy_cont", []),
    ("gym_CartPole-v1", []),
]


@pytest.mark.parametrize("task, configs", PPO_RUNS, ids=[run[0] for run in PPO_RUNS])
def test_ppo_trains_through_the_cli(tmp_path, task, configs):
    result = run_cli(tmp_path, task, configs, "--agent", "ppo")
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "done" and status["step"] >= 200
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    trained = [row for row in metrics if "train/loss/policy" in row]
    assert trained, f"no PPO update was logged for {task}"
    last = trained[-1]
    for key in ("train/loss/policy", "train/loss/value", "train/entropy", "train/approx_kl"):
        assert abs(last[key]) < 1e6, last  # finite and sane
    assert last["counter/updates"] > 0
    assert (tmp_path / "checkpoint" / "latest" / "manifest.json").exists()
    assert not (tmp_path / "checkpoint" / "latest" / "replay").exists()
