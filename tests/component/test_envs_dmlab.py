"""DMLab adapter against a small fake of the ``deepmind_lab`` module (the real one needs Bazel)."""

from __future__ import annotations

import sys
import types
from typing import ClassVar

import numpy as np
import pytest

from dreamer_tf.config import load_config
from dreamer_tf.envs import make
from dreamer_tf.envs.dmlab import ACTIONS, LEVELS, DMLab
from dreamer_tf.envs.wrappers import MissingPackageError
from tests.helpers.env_contract import rollout

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


class FakeLab:
    """The parts of ``deepmind_lab.Lab`` the adapter uses; episodes last ``length`` engine frames."""

    instances: ClassVar[list] = []

    def __init__(self, level, observations, config=None, renderer=None):
        self.level, self.observation_names, self.config = level, observations, config
        self.height, self.width = int(config["height"]), int(config["width"])
        self.frames, self.length, self.running = 0, 40, False
        self.actions, self.seeds, self.closed = [], [], False
        FakeLab.instances.append(self)

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.frames, self.running = 0, True

    def step(self, action, num_steps=1):
        assert action.dtype == np.intc and action.shape == (7,)
        self.actions.append((tuple(action), num_steps))
        self.frames += num_steps
        self.running = self.frames < self.length
        return 1.0 if action[3] == 1 else 0.0

    def is_running(self):
        return self.running

    def observations(self):
        assert self.running, "DMLab has no observations after the episode ended"
        image = np.full((self.height, self.width, 3), self.frames % 256, np.uint8)
        obs = {"RGB_INTERLEAVED": image}
        if "INSTR" in self.observation_names:
            obs["INSTR"] = "Pick the red ball" if self.frames < 8 else "Count 3 apples"
        return obs

    def close(self):
        self.closed = True


@pytest.fixture
def fake_lab(monkeypatch):
    module = types.ModuleType("deepmind_lab")
    module.Lab = FakeLab
    monkeypatch.setitem(sys.modules, "deepmind_lab", module)
    FakeLab.instances = []
    return FakeLab


def test_missing_package_names_the_build_instructions(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepmind_lab", None)
    with pytest.raises(MissingPackageError, match="Bazel.*docs/users/build.md"):
        DMLab("rooms_watermaze")


def test_thirty_levels_and_fifteen_actions():
    assert len(LEVELS) == 30 and len(ACTIONS) == 15 and len(set(ACTIONS)) == 15
    assert all(len(action) == 7 for action in ACTIONS)


def test_episode_through_the_registry(fake_lab):
    config = load_config(["dmlab"])
    env = make("dmlab_explore_goal_locations_small", config)
    lab = fake_lab.instances[-1]
    assert lab.level == "contributed/dmlab30/explore_goal_locations_small"
    assert lab.config == {"height": "64", "width": "64", "logLevel": "WARN"}
    assert env.act_space["action"].classes == 15
    history = rollout(env, steps=25, episodes=1)
    last = history[-1]
    assert last["is_last"] and last["is_terminal"]  # episodic
    assert len(history) == 11  # 40 frames at repeat 4
    assert all(steps == 4 for _, steps in lab.actions)
    # The finished level has no frame: the last observation repeats the previous one.
    np.testing.assert_array_equal(last["image"], history[-2]["image"])
    assert lab.seeds[0] is not None
    env.close()
    assert lab.closed


def test_action_mapping_and_reward(fake_lab):
    env = DMLab("rooms_watermaze", seed=0)
    env.step({"reset": True, "action": 0})
    obs = env.step({"reset": False, "action": 0})  # forward
    assert obs["reward"] == 1.0
    env.step({"reset": False, "action": 14})
    assert fake_lab.instances[-1].actions[-1][0] == (0, 0, 0, 0, 1, 0, 0)


def test_test_levels_train_on_train_variant_and_eval_holds_out(fake_lab):
    DMLab("rooms_collect_good_objects_test", mode="train")
    assert fake_lab.instances[-1].level.endswith("rooms_collect_good_objects_train")
    DMLab("rooms_collect_good_objects_test", mode="eval")
    lab = fake_lab.instances[-1]
    assert lab.level.endswith("_test") and lab.config["allowHoldOutLevels"] == "true"


def test_language_levels_embed_instructions(fake_lab):
    env = DMLab("language_select_described_object", seed=0)
    assert env.obs_space["instr"].shape == (1024,)
    first = env.step({"reset": True, "action": 0})
    assert first["instr"].dtype == np.float32 and np.abs(first["instr"]).sum() > 0
    for _ in range(3):
        later = env.step({"reset": False, "action": 0})
    assert not np.array_equal(first["instr"], later["instr"])
    other = DMLab("language_select_described_object", seed=1)
    np.testing.assert_array_equal(other.step({"reset": True, "action": 0})["instr"], first["instr"])
