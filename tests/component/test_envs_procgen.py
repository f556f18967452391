"""ProcGen adapter on a real game: 96x96 frames, hard mode, 15 actions, episode flags."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("procgen")

from dreamer_tf.config import load_config
from dreamer_tf.envs import make
from dreamer_tf.envs.procgen import ProcGen
from tests.helpers.env_contract import rollout

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


def test_random_rollout_at_96x96():
    config = load_config(["procgen"])
    env = make("procgen_coinrun", config)
    assert env.obs_space["image"].shape == (96, 96, 3)
    assert env.act_space["action"].classes == 15
    history = rollout(env, steps=1000, episodes=1)
    assert sum(bool(o["is_last"]) for o in history) >= 1
    image = history[-1]["image"]
    assert image.std() > 0
    env.close()


def test_hard_distribution_and_native_64():
    env = ProcGen("bigfish", size=(64, 64), distribution="hard", seed=0)
    assert env._distribution == "hard" and env._native
    obs = rollout(env, steps=50)[-1]
    assert obs["image"].shape == (64, 64, 3)


def test_reset_mid_episode_starts_a_new_episode():
    env = ProcGen("coinrun", size=(96, 96), seed=0)
    env.step({"reset": True, "action": 0})
    for _ in range(5):
        env.step({"reset": False, "action": 1})
    obs = env.step({"reset": True, "action": 0})
    assert obs["is_first"] and obs["reward"] == 0
    assert isinstance(env._env.observe()[2][0], (bool, np.bool_))


def test_unknown_game():
    with pytest.raises(ValueError, match="coinrun"):
        ProcGen("pacman")
