"""Crafter (Hafner 2021), the runnable Minecraft-like stand-in: ``crafter_reward``.

``crafter_noreward`` trains without the achievement reward. With ``config.env.crafter.logs``
every observation carries ``log/achievement_<name>``: how often the achievement was
unlocked so far in the episode. The loop turns the values at ``is_last`` into success
rates, and ``crafter_score`` into the benchmark's score.

    env = make("reward", config)
    obs = env.step({"reset": True, "action": 0})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from dreamer_tf.envs.base import Env, standard_obs_spaces
from dreamer_tf.envs.wrappers import require, standardize
from dreamer_tf.spaces import Space

INSTALL = "pip install crafter==1.8.3"

# The 22 achievements of Crafter 1.8 (crafter.constants.achievements), for use without the package.
ACHIEVEMENTS = (
    "collect_coal", "collect_diamond", "collect_drink", "collect_iron", "collect_sapling",
    "collect_stone", "collect_wood", "defeat_skeleton", "defeat_zombie", "eat_cow", "eat_plant",
    "make_iron_pickaxe", "make_iron_sword", "make_stone_pickaxe", "make_stone_sword",
    "make_wood_pickaxe", "make_wood_sword", "place_furnace", "place_plant", "place_stone",
    "place_table", "wake_up",
)  # fmt: skip


class Crafter(Env):
    """Crafter's ``Env`` under the step-with-reset contract; ``is_terminal`` on death only."""

    def __init__(
        self,
        task: str,
        size: tuple[int, int] = (64, 64),
        logs: bool = True,
        length: int = 10000,
        seed: int | None = None,
    ) -> None:
        check(task)
        crafter = require("crafter", "crafter", INSTALL)
        self._env = crafter.Env(size=tuple(size), reward=(task == "reward"), length=length, seed=seed)
        self._achievements = tuple(crafter.constants.achievements)
        self._logs = logs
        self._done = True

    @property
    def obs_space(self) -> dict[str, Space]:
        spaces = {
            "image": Space(np.uint8, tuple(self._env.observation_space.shape)),
            **standard_obs_spaces(),
            "log/reward": Space(np.float32),
        }
        if self._logs:
            spaces.update({f"log/achievement_{name}": Space(np.int32) for name in self._achievements})
        return spaces

    @property
    def act_space(self) -> dict[str, Space]:
        return {"reset": Space(bool), "action": Space(np.int32, (), 0, self._env.action_space.n)}

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"] or self._done:
            self._done = False
            return self._obs(self._env.reset(), 0.0, {}, is_first=True)
        image, reward, done, info = self._env.step(int(action["action"]))
        self._done = bool(done)
        return self._obs(image, reward, info, is_last=self._done, is_terminal=info["discount"] == 0)

    def _obs(
        self,
        image: np.ndarray,
        reward: float,
        info: Mapping[str, Any],
        is_first: bool = False,
        is_last: bool = False,
        is_terminal: bool = False,
    ) -> dict[str, np.ndarray]:
        obs = {
            "image": np.asarray(image, np.uint8),
            "reward": np.float32(reward),
            "is_first": np.asarray(is_first),
            "is_last": np.asarray(is_last),
            "is_terminal": np.asarray(bool(is_terminal)),
            # The environment's own reward, also when the agent trains without it (noreward).
            "log/reward": np.float32(info.get("reward", 0.0)),
        }
        if self._logs:
            unlocked = info.get("achievements", {})
            for name in self._achievements:
                obs[f"log/achievement_{name}"] = np.int32(unlocked.get(name, 0))
        return obs


def success_rates(episodes: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Per achievement, the percentage of episodes in which it was unlocked at least once.

    ``episodes`` are the final observations (``is_last``) of finished episodes, or any
    mappings holding ``log/achievement_<name>`` or ``achievement_<name>`` counts.
    """
    episodes = list(episodes)
    assert episodes, "success_rates needs at least one episode"
    rates = {}
    for name in ACHIEVEMENTS:
        hits = [
            float(ep.get(f"log/achievement_{name}", ep.get(f"achievement_{name}", 0)) > 0) for ep in episodes
        ]
        rates[name] = 100.0 * float(np.mean(hits))
    return rates


def crafter_score(rates: Mapping[str, float] | Iterable[float]) -> float:
    """The Crafter score: ``exp(mean(log(1 + s_i))) - 1`` over success rates ``s_i`` in percent.

    A geometric mean offset by one, so an achievement never unlocked does not zero the score
    (Hafner 2021, Sec. 3). Ranges from 0 to 100.
    """
    values = np.asarray(list(rates.values()) if isinstance(rates, Mapping) else list(rates), np.float64)
    assert values.size and ((values >= 0) & (values <= 100)).all(), f"success rates in percent: {values}"
    return float(np.exp(np.mean(np.log(1.0 + values))) - 1.0)


def check(task: str) -> None:
    """Raise ``ValueError`` unless ``task`` is ``reward`` or ``noreward`` (``dreamer_tf.envs.check_task``)."""
    if task not in ("reward", "noreward"):
        raise ValueError(f"Crafter tasks are 'reward' and 'noreward', got '{task}'.")


def make(task: str, config: Any) -> Env:
    """``crafter_reward`` / ``crafter_noreward`` with ``config.env.crafter``."""
    settings = dict(config.env.crafter)
    settings["size"] = tuple(settings["size"])
    return standardize(Crafter(task, **settings))
