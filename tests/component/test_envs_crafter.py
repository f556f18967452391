"""Crafter adapter on the real game, achievement logging and the Crafter score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dreamer_tf.envs.crafter import ACHIEVEMENTS, crafter_score, success_rates

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


def test_score_is_the_offset_geometric_mean():
    assert crafter_score([0.0] * 22) == pytest.approx(0.0)
    assert crafter_score([100.0] * 22) == pytest.approx(100.0)
    rates = [10.0, 50.0, 0.0]
    expected = math.exp(sum(math.log(1 + r) for r in rates) / 3) - 1
    assert crafter_score(rates) == pytest.approx(expected)
    assert crafter_score({"a": 10.0, "b": 50.0, "c": 0.0}) == pytest.approx(expected)


def test_success_rates_from_final_observations():
    episodes = [{"log/achievement_collect_wood": 3}, {"log/achievement_collect_wood": 0}]
    rates = success_rates(episodes)
    assert set(rates) == set(ACHIEVEMENTS)
    assert rates["collect_wood"] == 50.0 and rates["wake_up"] == 0.0


def test_real_episode_logs_achievements():
    pytest.importorskip("crafter")
    from dreamer_tf.config import load_config
    from dreamer_tf.envs import make
    from tests.helpers.env_contract import rollout

    config = load_config(["crafter"]).update({"env.crafter.length": 120})
    env = make("crafter_reward", config)
    import crafter

    assert tuple(crafter.constants.achievements) == ACHIEVEMENTS
    keys = {f"log/achievement_{name}" for name in ACHIEVEMENTS}
    assert keys <= set(env.obs_space)
    assert env.obs_space["image"].shape == (64, 64, 3)
    assert env.act_space["action"].classes == 17
    history = rollout(env, steps=300, episodes=2)
    ends = [o for o in history if o["is_last"]]
    assert len(ends) == 2
    assert all(history[i]["log/achievement_collect_wood"] >= 0 for i in range(len(history)))
    assert all(np.asarray(o["log/achievement_wake_up"]).dtype == np.int32 for o in history)
    score = crafter_score(success_rates(ends))
    assert 0.0 <= score <= 100.0
    env.close()
