"""Minecraft Diamond adapter against a small fake of MineRL's herobraine API."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from dreamer_tf.config import load_config
from dreamer_tf.envs import make
from dreamer_tf.envs.minecraft import DIAMOND_ACTIONS, MILESTONES, MinecraftDiamond
from dreamer_tf.envs.wrappers import MissingPackageError
from tests.helpers.env_contract import rollout

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent

ITEMS = ["air", "dirt", "log", "log2", "planks", "stick", "crafting_table", "wooden_pickaxe",
         "cobblestone", "stone_pickaxe", "iron_ore", "furnace", "iron_ingot", "iron_pickaxe", "diamond"]  # fmt: skip


class Enum:
    def __init__(self, *values):
        self.values = np.array(values)


class FakeMineRLEnv:
    """Old-gym MineRL env: nested dict observations, dict actions, 4-tuple step."""

    def __init__(self, spec):
        self.spec = spec
        self.observation_space = {
            "pov": None,
            "inventory": {item: None for item in ITEMS},
            "equipped_items": {"mainhand": {"type": Enum("air", "wooden_pickaxe", "other")}},
        }
        self.commands, self.inventory, self.life, self.steps = [], {}, 20.0, 0
        self.script: dict[int, dict] = {}

    def _obs(self):
        return {
            "pov": np.full((64, 64, 3), self.steps % 255, np.uint8),
            "inventory": {item: np.int64(self.inventory.get(item, 0)) for item in ITEMS},
            "equipped_items": {"mainhand": {"type": "air", "damage": 0, "maxDamage": 0}},
            "life_stats": {"life": self.life, "food": 20.0, "air": 300.0},
            "location_stats": {"xpos": 0.0, "ypos": 64.0, "zpos": 0.0},
        }

    def reset(self):
        self.inventory, self.life, self.steps = {}, 20.0, 0
        return self._obs()

    def step(self, action):
        self.commands.append(action)
        self.steps += 1
        change = self.script.get(self.steps, {})
        self.inventory.update(change.get("inventory", {}))
        self.life = change.get("life", self.life)
        return self._obs(), 0.0, self.life <= 0, {}

    def close(self):
        pass


def fake_minerl() -> dict[str, types.ModuleType]:
    created = []

    class EnvSpec:
        def __init__(self, name):
            self.name = name

        def make(self):
            assert self.create_agent_start()[0].to_string() == "break_speed(100.0)"
            assert len(self.create_actionables()) == 13 and len(self.create_observables()) == 5
            env = FakeMineRLEnv(self)
            created.append(env)
            return env

    class Handler:
        pass

    handlers = types.ModuleType("minerl.herobraine.hero.handlers")
    handlers.__getattr__ = lambda name: lambda *args, **kwargs: (name, args, kwargs)
    modules = {
        "minerl": types.ModuleType("minerl"),
        "minerl.herobraine": types.ModuleType("minerl.herobraine"),
        "minerl.herobraine.env_spec": types.ModuleType("minerl.herobraine.env_spec"),
        "minerl.herobraine.hero": types.ModuleType("minerl.herobraine.hero"),
        "minerl.herobraine.hero.handler": types.ModuleType("minerl.herobraine.hero.handler"),
        "minerl.herobraine.hero.handlers": handlers,
        "minerl.herobraine.hero.mc": types.ModuleType("minerl.herobraine.hero.mc"),
    }
    modules["minerl.herobraine.env_spec"].EnvSpec = EnvSpec
    modules["minerl.herobraine.hero.handler"].Handler = Handler
    modules["minerl.herobraine.hero.mc"].ALL_ITEMS = ITEMS
    modules["minerl.herobraine.hero.mc"].INVERSE_KEYMAP = {
        k: k for k in ("forward", "back", "left", "right", "jump", "sneak", "attack")
    }
    modules["minerl"].created = created
    return modules


@pytest.fixture
def minerl(monkeypatch):
    modules = fake_minerl()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return modules["minerl"]


def test_missing_package_says_java_and_pip(monkeypatch):
    monkeypatch.setitem(sys.modules, "minerl", None)
    monkeypatch.setitem(sys.modules, "minerl.herobraine", None)
    monkeypatch.setitem(sys.modules, "minerl.herobraine.env_spec", None)
    with pytest.raises(MissingPackageError, match="Java 8.*minerl==0.4.4"):
        make("minecraft_diamond", load_config(["minecraft"]))


def test_registry_episode_and_spaces(minerl):
    config = load_config(["minecraft"]).update({"env.minecraft.length": 30})
    env = make("minecraft_diamond", config)
    assert env.act_space["action"].classes == 25 == len(DIAMOND_ACTIONS)
    assert env.obs_space["inventory"].shape == (len(ITEMS) - 1,)  # log2 merges into log
    assert env.obs_space["equipped"].shape == (3,)
    history = rollout(env, steps=40, episodes=1)
    assert history[-1]["is_last"] and not history[-1]["is_terminal"]  # the 36k-step limit truncates
    assert len(history) == 31
    assert all("log/inventory/diamond" in o for o in history)


def test_milestone_rewards_once_each_and_health(minerl):
    env = MinecraftDiamond()
    fake = minerl.created[-1]
    fake.script = {
        2: {"inventory": {"log2": 1}},  # log2 counts as log
        3: {"inventory": {"log2": 2, "planks": 4}},
        4: {"inventory": {"planks": 0}},
        5: {"inventory": {"planks": 4}, "life": 10.0},
        6: {"inventory": {"diamond": 1}, "life": 0.0},
    }
    rewards = [float(env.step({"reset": True, "action": 0})["reward"])]
    for _ in range(6):
        obs = env.step({"reset": False, "action": 0})
        rewards.append(float(obs["reward"]))
    assert rewards[:5] == [0.0, 0.0, 1.0, 1.0, 0.0]  # log, planks; regaining planks gives nothing
    assert rewards[5] == pytest.approx(0.01 * (0.5 - 1.0))
    assert rewards[6] == pytest.approx(1.0 + 0.01 * (0.0 - 0.5))
    assert obs["is_last"] and obs["is_terminal"]  # death
    assert obs["inventory_max"][env._inv_keys.index("inventory/planks")] == 4
    assert obs["health"] == 0.0 and obs["equipped"].tolist() == [1.0, 0.0, 0.0]
    assert len(MILESTONES) == 12


def test_action_translation_sticky_jump_and_pitch_limit(minerl):
    env = MinecraftDiamond()
    fake = minerl.created[-1]
    names = list(DIAMOND_ACTIONS)
    env.step({"reset": True, "action": 0})
    env.step({"reset": False, "action": names.index("craft_wooden_pickaxe")})
    assert fake.commands[-1]["nearbyCraft"] == "wooden_pickaxe" and fake.commands[-1]["craft"] == "none"
    env.step({"reset": False, "action": names.index("jump")})
    for _ in range(3):
        env.step({"reset": False, "action": names.index("noop")})
    assert all(c["jump"] == 1 and c["forward"] == 1 for c in fake.commands[-4:])  # sticky jump
    for _ in range(6):
        env.step({"reset": False, "action": names.index("turn_up")})
    pitches = [float(c["camera"][0]) for c in fake.commands[-6:]]
    assert pitches == [-15, -15, -15, -15, 0, 0]  # pitch limited to -60
    env.step({"reset": False, "action": names.index("attack")})
    env.step({"reset": False, "action": names.index("noop")})
    assert fake.commands[-1]["attack"] == 0  # no sticky attack with break speed 100
