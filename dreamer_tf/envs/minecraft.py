"""Minecraft Diamond through MineRL 0.4.4, in the paper's setup (``minecraft_diamond``).

The world is MineRL's default survival world with block breaking sped up by
``break_speed`` (100). The agent chooses among 25 categorical actions: 12 basic
movements plus crafting, placing, equipping and smelting. Observations are the 64x64
first-person image, the inventory counts (and their running maximum), the equipped item
(one-hot), and health, hunger and breath scaled to [0, 1]. The reward is +1 for the first
time in an episode each of 12 milestone items is obtained (log, planks, stick, crafting
table, wooden pickaxe, cobblestone, stone pickaxe, iron ore, furnace, iron ingot, iron
pickaxe, diamond) plus 0.01 times the change in scaled health. Episodes end on death or
after ``length`` (36,000) steps.

MineRL needs Java 8 (JDK) and builds Minecraft on first use, which downloads from the
network: ``apt-get install openjdk-8-jdk && pip install minerl==0.4.4``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from dreamer_tf.envs.base import Env, standard_obs_spaces
from dreamer_tf.envs.wrappers import TimeLimit, require, standardize
from dreamer_tf.spaces import Space

INSTALL = "a Java 8 JDK (e.g. apt-get install openjdk-8-jdk), then pip install minerl==0.4.4"

BASIC_ACTIONS: dict[str, dict[str, Any]] = {
    "noop": {},
    "attack": {"attack": 1},
    "turn_up": {"camera": (-15, 0)},
    "turn_down": {"camera": (15, 0)},
    "turn_left": {"camera": (0, -15)},
    "turn_right": {"camera": (0, 15)},
    "forward": {"forward": 1},
    "back": {"back": 1},
    "left": {"left": 1},
    "right": {"right": 1},
    "jump": {"jump": 1, "forward": 1},
    "place_dirt": {"place": "dirt"},
}

DIAMOND_ACTIONS: dict[str, dict[str, Any]] = {
    **BASIC_ACTIONS,
    "craft_planks": {"craft": "planks"},
    "craft_stick": {"craft": "stick"},
    "craft_crafting_table": {"craft": "crafting_table"},
    "place_crafting_table": {"place": "crafting_table"},
    "craft_wooden_pickaxe": {"nearbyCraft": "wooden_pickaxe"},
    "craft_stone_pickaxe": {"nearbyCraft": "stone_pickaxe"},
    "craft_iron_pickaxe": {"nearbyCraft": "iron_pickaxe"},
    "equip_stone_pickaxe": {"equip": "stone_pickaxe"},
    "equip_wooden_pickaxe": {"equip": "wooden_pickaxe"},
    "equip_iron_pickaxe": {"equip": "iron_pickaxe"},
    "craft_furnace": {"nearbyCraft": "furnace"},
    "place_furnace": {"place": "furnace"},
    "smelt_iron_ingot": {"nearbySmelt": "iron_ingot"},
}

MILESTONES = (
    "log", "planks", "stick", "crafting_table", "wooden_pickaxe", "cobblestone", "stone_pickaxe",
    "iron_ore", "furnace", "iron_ingot", "iron_pickaxe", "diamond",
)  # fmt: skip

NOOP: dict[str, Any] = {
    "camera": (0, 0), "forward": 0, "back": 0, "left": 0, "right": 0, "attack": 0, "sprint": 0,
    "jump": 0, "sneak": 0, "craft": "none", "nearbyCraft": "none", "nearbySmelt": "none",
    "place": "none", "equip": "none",
}  # fmt: skip

LOG_ITEMS = ("log", "cobblestone", "iron_ingot", "diamond")
_LOCK = threading.Lock()  # MineRL's launcher is not safe to start from several threads at once.


def make_minerl_env(size: tuple[int, int], break_speed: float) -> Any:
    """Build MineRL's gym environment for the open-world survival setting of the paper."""
    for alias, value in (("float", float), ("int", int), ("bool", bool)):
        if not hasattr(np, alias):
            setattr(np, alias, value)  # MineRL 0.4 uses numpy aliases removed in numpy 1.24.
    env_spec = require("minerl.herobraine.env_spec", "minerl", INSTALL)
    handler = require("minerl.herobraine.hero.handler", "minerl", INSTALL)
    handlers = require("minerl.herobraine.hero.handlers", "minerl", INSTALL)
    mc = require("minerl.herobraine.hero.mc", "minerl", INSTALL)

    class BreakSpeedMultiplier(handler.Handler):
        def __init__(self, multiplier: float) -> None:
            self.multiplier = multiplier

        def to_string(self) -> str:
            return f"break_speed({self.multiplier})"

        def xml_template(self) -> str:
            return "<BreakSpeedMultiplier>{{multiplier}}</BreakSpeedMultiplier>"

    class Spec(env_spec.EnvSpec):
        def __init__(self) -> None:
            super().__init__(name="MineRLEnv-v1")

        def create_agent_start(self) -> list:
            return [BreakSpeedMultiplier(break_speed)]

        def create_agent_handlers(self) -> list:
            return []

        def create_server_world_generators(self) -> list:
            return [handlers.DefaultWorldGenerator(force_reset=True)]

        def create_server_quit_producers(self) -> list:
            return [handlers.ServerQuitWhenAnyAgentFinishes()]

        def create_server_initial_conditions(self) -> list:
            return [
                handlers.TimeInitialCondition(allow_passage_of_time=True, start_time=0),
                handlers.SpawningInitialCondition(allow_spawning=True),
            ]

        def create_observables(self) -> list:
            return [
                handlers.POVObservation(tuple(size)),
                handlers.FlatInventoryObservation(mc.ALL_ITEMS),
                handlers.EquippedItemObservation(mc.ALL_ITEMS, _default="air", _other="other"),
                handlers.ObservationFromCurrentLocation(),
                handlers.ObservationFromLifeStats(),
            ]

        def create_actionables(self) -> list:
            keys = ("forward", "back", "left", "right", "jump", "sneak", "attack")
            items = ["none", *mc.ALL_ITEMS]
            kwargs = {"_other": "none", "_default": "none"}
            return [
                *(handlers.KeybasedCommandAction(key, mc.INVERSE_KEYMAP[key]) for key in keys),
                handlers.CameraAction(),
                handlers.PlaceBlock(items, **kwargs),
                handlers.EquipAction(items, **kwargs),
                handlers.CraftAction(items, **kwargs),
                handlers.CraftNearbyAction(items, **kwargs),
                handlers.SmeltItemNearby(items, **kwargs),
            ]

        def is_from_folder(self, folder: str) -> bool:
            return folder == "none"

        def get_docstring(self) -> str:
            return ""

        def determine_success_from_rewards(self, rewards: Any) -> bool:
            return True

        def create_rewardables(self) -> list:
            return []

        def create_server_decorators(self) -> list:
            return []

        def create_mission_handlers(self) -> list:
            return []

        def create_monitors(self) -> list:
            return []

    with _LOCK:
        return Spec().make()


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else key
        if hasattr(value, "spaces") and isinstance(value.spaces, Mapping):
            value = value.spaces
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


class MinecraftDiamond(Env):
    """The Diamond task on top of a MineRL gym environment (old gym API: 4-tuple ``step``)."""

    def __init__(
        self,
        size: tuple[int, int] = (64, 64),
        break_speed: float = 100.0,
        sticky_attack: int = 30,
        sticky_jump: int = 10,
        pitch_limit: tuple[float, float] = (-60, 60),
        gym_env: Any = None,
    ) -> None:
        self._size = tuple(int(x) for x in size)
        self._env = gym_env if gym_env is not None else make_minerl_env(self._size, break_speed)
        # With fast breaking a single attack press breaks a block; holding attack is unneeded.
        self._sticky_attack = 0 if break_speed != 1.0 else sticky_attack
        self._sticky_jump = sticky_jump
        self._pitch_limit = pitch_limit
        space = self._env.observation_space
        items = sorted(_flatten({"inventory": space["inventory"]}))
        self._inv_keys = [k for k in items if k != "inventory/log2"]
        self._equip_enum = list(space["equipped_items"]["mainhand"]["type"].values)
        self._action_names = tuple(DIAMOND_ACTIONS)
        self._action_values = tuple({**NOOP, **value} for value in DIAMOND_ACTIONS.values())
        self._done = True
        self._attack_left = self._jump_left = 0
        self._pitch = 0.0
        self._max_inventory: np.ndarray | None = None
        self._previous_health = 0.0
        self._unlocked: set[str] = set()

    @property
    def action_names(self) -> tuple[str, ...]:
        return self._action_names

    @property
    def obs_space(self) -> dict[str, Space]:
        count = len(self._inv_keys)
        return {
            "image": Space(np.uint8, (*self._size, 3)),
            "inventory": Space(np.float32, (count,), 0, np.inf),
            "inventory_max": Space(np.float32, (count,), 0, np.inf),
            "equipped": Space(np.float32, (len(self._equip_enum),), 0, 1),
            "health": Space(np.float32, (), 0, 1),
            "hunger": Space(np.float32, (), 0, 1),
            "breath": Space(np.float32, (), 0, 1),
            **standard_obs_spaces(),
            **{f"log/{key}": Space(np.int32) for key in self._log_keys},
        }

    @property
    def _log_keys(self) -> list[str]:
        return [f"inventory/{item}" for item in LOG_ITEMS]

    @property
    def act_space(self) -> dict[str, Space]:
        return {"reset": Space(bool), "action": Space(np.int32, (), 0, len(self._action_values))}

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"] or self._done:
            return self._reset()
        command = self._command(dict(self._action_values[int(action["action"])]))
        raw, _, done, info = self._env.step(command)
        if info and "error" in info:
            # MineRL reports a crashed Minecraft instance this way; start over in a fresh world.
            return self._reset()
        self._done = bool(done)
        return self._obs(raw, is_first=False, is_last=self._done, is_terminal=self._done)

    def _reset(self) -> dict[str, np.ndarray]:
        with _LOCK:
            raw = self._env.reset()
        self._done = False
        self._attack_left = self._jump_left = 0
        self._pitch = 0.0
        self._max_inventory = None
        self._unlocked = set()
        return self._obs(raw, is_first=True)

    def _command(self, command: dict[str, Any]) -> dict[str, Any]:
        if self._sticky_attack:
            if command["attack"]:
                self._attack_left = self._sticky_attack
            if self._attack_left > 0:
                command.update(attack=1, jump=0)
                self._attack_left -= 1
        if self._sticky_jump:
            if command["jump"]:
                self._jump_left = self._sticky_jump
            if self._jump_left > 0:
                command.update(jump=1, forward=1)
                self._jump_left -= 1
        pitch, yaw = command["camera"]
        if self._pitch_limit and pitch:
            low, high = self._pitch_limit
            if low <= self._pitch + pitch <= high:
                self._pitch += pitch
            else:
                pitch = 0
        command["camera"] = np.array([pitch, yaw], np.float32)
        return command

    def _obs(
        self, raw: Mapping[str, Any], is_first: bool, is_last: bool = False, is_terminal: bool = False
    ) -> dict[str, np.ndarray]:
        flat = _flatten(raw)
        flat["inventory/log"] = flat["inventory/log"] + flat.pop("inventory/log2", 0)
        inventory = np.array([flat[key] for key in self._inv_keys], np.float32)
        if self._max_inventory is None:
            self._max_inventory = inventory
        self._max_inventory = np.maximum(self._max_inventory, inventory)
        equipped = np.zeros(len(self._equip_enum), np.float32)
        mainhand = flat["equipped_items/mainhand/type"]
        equipped[self._equip_enum.index(mainhand if mainhand in self._equip_enum else "other")] = 1.0
        health = np.float32(flat["life_stats/life"] / 20)
        counts = {key.split("/", 1)[1]: value for key, value in zip(self._inv_keys, inventory, strict=True)}
        reward = 0.0
        if is_first:
            # Items held at the start (normally none) do not count as milestones.
            self._unlocked = {item for item in MILESTONES if counts.get(item, 0) > 0}
        else:
            for item in MILESTONES:
                if item not in self._unlocked and counts.get(item, 0) > 0:
                    self._unlocked.add(item)
                    reward += 1.0
            reward += 0.01 * float(health - self._previous_health)
        self._previous_health = float(health)
        return {
            "image": np.asarray(flat["pov"], np.uint8),
            "inventory": inventory,
            "inventory_max": self._max_inventory.copy(),
            "equipped": equipped,
            "health": health,
            "hunger": np.float32(flat["life_stats/food"] / 20),
            "breath": np.float32(flat["life_stats/air"] / 300),
            "reward": np.float32(reward),
            "is_first": np.asarray(is_first),
            "is_last": np.asarray(is_last),
            "is_terminal": np.asarray(is_terminal),
            **{f"log/{key}": np.int32(flat[key]) for key in self._log_keys},
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing is best effort
            self._env.close()


def check(task: str) -> None:
    """Raise ``ValueError`` unless ``task`` is ``diamond`` (``dreamer_tf.envs.check_task``)."""
    if task != "diamond":
        raise ValueError(f"The Minecraft domain has the task 'diamond' only, got '{task}'.")


def make(task: str, config: Any) -> Env:
    """``minecraft_diamond`` with ``config.env.minecraft``."""
    check(task)
    settings = config.env.minecraft
    env = MinecraftDiamond(size=tuple(settings.size), break_speed=float(settings.break_speed))
    return standardize(TimeLimit(env, int(settings.length)))
