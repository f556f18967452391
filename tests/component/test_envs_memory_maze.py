"""Memory Maze adapter on the real package (MuJoCo rendering)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("memory_maze")

from dreamer_tf.config import load_config
from dreamer_tf.envs import make
from tests.helpers.env_contract import rollout

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


def test_short_episodes_with_images():
    config = load_config(["memory_maze"]).update({"env.memory_maze.length": 10})
    env = make("memory_maze_9x9", config)
    assert set(env.obs_space) == {"image", "reward", "is_first", "is_last", "is_terminal"}
    assert env.obs_space["image"].shape == (64, 64, 3)
    assert env.act_space["action"].classes == 6
    history = rollout(env, steps=15, episodes=1)
    ends = [o for o in history if o["is_last"]]
    assert len(ends) == 1 and not ends[0]["is_terminal"]  # time limits truncate
    assert np.asarray(history[-1]["image"]).std() > 0
    env.close()


def test_unknown_size():
    with pytest.raises(ValueError, match="9x9"):
        make("memory_maze_7x7", load_config())
