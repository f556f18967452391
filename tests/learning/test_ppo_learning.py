"""Proof that the PPO baseline learns, with its one fixed configuration, through the CLI.

Each run is ``python -m dreamer_tf --agent ppo`` in a subprocess (the backend comes from
``KERAS_BACKEND``), split into two chunks: the second resumes from the first's checkpoint (weights,
optimizer, return normaliser, RNG), so a resume that lost anything shows up as a failure to learn.
Flags set only the run (env count, steps, in-process envs), never a PPO hyperparameter.
Thresholds are fixed: if a change makes a test fail, fix the agent.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.helpers.cli_runs import check_one_curve, report, scores, train

pytestmark = pytest.mark.learning

RUN_FLAGS = ["--agent", "ppo", "--run.parallel", "none"]


def test_ppo_solves_cartpole(tmp_path):
    # CartPole-v1 pays 1 per step, at most 500; a random policy averages about 22.
    flags = [*RUN_FLAGS, "--run.envs", "8"]
    start = time.time()
    train(tmp_path, "gym_CartPole-v1", [], 50_000, *flags, timeout=900)
    first = len(scores(tmp_path))
    train(tmp_path, "gym_CartPole-v1", [], 120_000, *flags, timeout=900)  # resumes the first chunk
    records = scores(tmp_path)
    report("cartpole", records, time.time() - start, 20)
    check_one_curve(records, first, 120_000)
    last = np.mean([r["episode/score"] for r in records[-20:]])
    assert last >= 450, f"mean return of the last 20 episodes {last:.1f} < 450"
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    trained = [m for m in metrics if "train/loss/policy" in m]
    keys = ("loss/value", "entropy", "approx_kl", "clip_frac", "explained_variance", "opt/grad_norm")
    assert trained and all(f"train/{key}" in trained[-1] for key in keys), trained[-1:]
    assert trained[-1]["counter/updates"] > 0
    assert not (tmp_path / "checkpoint" / "latest" / "replay").exists()  # on-policy: no replay buffer


def test_ppo_learns_catch(tmp_path):
    # bsuite catch: a random policy averages about -0.6, the best possible is +1.
    flags = [*RUN_FLAGS, "--run.envs", "4"]
    start = time.time()
    train(tmp_path, "bsuite_catch/0", ["bsuite"], 8_000, *flags, timeout=900)
    first = len(scores(tmp_path))
    train(tmp_path, "bsuite_catch/0", ["bsuite"], 20_000, *flags, timeout=900)
    records = scores(tmp_path)
    report("catch", records, time.time() - start, 100)
    check_one_curve(records, first, 20_000)
    last = np.mean([r["episode/score"] for r in records[-100:]])
    assert last >= 0.7, f"mean return of the last 100 episodes {last:.2f} < 0.7"
