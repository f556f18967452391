"""DeepMind Lab's DMLab-30 levels through the ``deepmind_lab`` Python module.

Tasks are the DMLab-30 level names (``dmlab_explore_goal_locations_small``). The agent
picks among the 15 discretised actions used by PopArt and R2D2 (the official default);
each is held for ``repeat`` (4) frames by the engine. Observations are 64x64 RGB; the
language levels add ``instr``, the instruction as 32 hashed token embeddings of size 32.
``_test`` levels train on their ``_train`` variant; ``mode: eval`` plays the held-out
levels. With ``episodic`` an episode end is terminal (the official setting).

DeepMind Lab has no wheel: build it from source with Bazel and install the resulting
Python package, following
https://github.com/google-deepmind/lab/blob/master/docs/users/build.md
"""

from __future__ import annotations

import difflib
import itertools
import re
import zlib
from typing import Any

import numpy as np

from dreamer_tf.envs.base import Env, standard_obs_spaces
from dreamer_tf.envs.wrappers import require, standardize
from dreamer_tf.spaces import Space

INSTALL = (
    "build DeepMind Lab from source with Bazel and pip install the built package, see "
    "https://github.com/google-deepmind/lab/blob/master/docs/users/build.md"
)

LEVELS = (
    "explore_goal_locations_large", "explore_goal_locations_small", "explore_object_locations_large",
    "explore_object_locations_small", "explore_object_rewards_few", "explore_object_rewards_many",
    "explore_obstructed_goals_large", "explore_obstructed_goals_small",
    "language_answer_quantitative_question", "language_execute_random_task",
    "language_select_described_object", "language_select_located_object", "lasertag_one_opponent_large",
    "lasertag_one_opponent_small", "lasertag_three_opponents_large", "lasertag_three_opponents_small",
    "natlab_fixed_large_map", "natlab_varying_map_randomized", "natlab_varying_map_regrowth",
    "psychlab_arbitrary_visuomotor_mapping", "psychlab_continuous_recognition",
    "psychlab_sequential_comparison", "psychlab_visual_search", "rooms_collect_good_objects_test",
    "rooms_exploit_deferred_effects_test", "rooms_keys_doors_puzzle", "rooms_select_nonmatching_object",
    "rooms_watermaze", "skymaze_irreversible_path_hard", "skymaze_irreversible_path_varied",
)  # fmt: skip

# DMLab's 7 action dimensions: look left/right (pixels), look down/up, strafe left/right,
# move back/forward, fire, jump, crouch. The 15 actions of PopArt (Hessel et al. 2019).
ACTIONS = (
    (0, 0, 0, 1, 0, 0, 0),  # forward
    (0, 0, 0, -1, 0, 0, 0),  # backward
    (0, 0, -1, 0, 0, 0, 0),  # strafe left
    (0, 0, 1, 0, 0, 0, 0),  # strafe right
    (-10, 0, 0, 0, 0, 0, 0),  # small look left
    (10, 0, 0, 0, 0, 0, 0),  # small look right
    (-60, 0, 0, 0, 0, 0, 0),  # large look left
    (60, 0, 0, 0, 0, 0, 0),  # large look right
    (0, 10, 0, 0, 0, 0, 0),  # look down
    (0, -10, 0, 0, 0, 0, 0),  # look up
    (-10, 0, 0, 1, 0, 0, 0),  # forward + small look left
    (10, 0, 0, 1, 0, 0, 0),  # forward + small look right
    (-60, 0, 0, 1, 0, 0, 0),  # forward + large look left
    (60, 0, 0, 1, 0, 0, 0),  # forward + large look right
    (0, 0, 0, 0, 1, 0, 0),  # fire
)

_TOKENS = re.compile(r"([A-Za-z_]+|[^A-Za-z_ ]+)")
_seed_counter = itertools.count()


class DMLab(Env):
    """One DMLab-30 level."""

    INSTR_TOKENS = 32
    EMBED_SIZE = 32
    VOCAB_BUCKETS = 64 * 1024

    def __init__(
        self,
        level: str,
        repeat: int = 4,
        size: tuple[int, int] = (64, 64),
        mode: str = "train",
        episodic: bool = True,
        seed: int | None = None,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"Unknown DMLab-30 level '{level}'. Levels: {', '.join(LEVELS)}")
        if mode not in ("train", "eval"):
            raise ValueError(f"env.dmlab.mode must be train or eval, got {mode!r}")
        deepmind_lab = require("deepmind_lab", "deepmind_lab", INSTALL)
        self._size = tuple(int(x) for x in size)
        self._repeat = repeat
        self._episodic = episodic
        self._text = level.startswith("language")
        self._rng = np.random.default_rng(seed)
        settings = {"height": self._size[0], "width": self._size[1], "logLevel": "WARN"}
        if mode == "train":
            level = level.replace("_test", "_train") if level.endswith("_test") else level
        else:
            settings.update(allowHoldOutLevels="true", mixerSeed=0x600D5EED)
        observations = ["RGB_INTERLEAVED", "INSTR"] if self._text else ["RGB_INTERLEAVED"]
        self._lab = deepmind_lab.Lab(
            "contributed/dmlab30/" + level,
            observations,
            config={k: str(v) for k, v in settings.items()},
        )
        if self._text:
            # A fixed random table, the same in every process, so instructions embed identically.
            table_rng = np.random.default_rng(0)
            self._embeddings = table_rng.normal(0.0, 1.0, (self.VOCAB_BUCKETS, self.EMBED_SIZE)).astype(
                np.float32
            )
        self._image = np.zeros((*self._size, 3), np.uint8)
        self._instr = np.zeros(self.INSTR_TOKENS * self.EMBED_SIZE, np.float32)
        self._done = True

    @property
    def obs_space(self) -> dict[str, Space]:
        spaces = {"image": Space(np.uint8, (*self._size, 3)), **standard_obs_spaces()}
        if self._text:
            spaces["instr"] = Space(np.float32, (self.INSTR_TOKENS * self.EMBED_SIZE,))
        return spaces

    @property
    def act_space(self) -> dict[str, Space]:
        return {"reset": Space(bool), "action": Space(np.int32, (), 0, len(ACTIONS))}

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"] or self._done:
            self._lab.reset(seed=int(self._rng.integers(0, 2**31 - 1)))
            self._done = False
            return self._obs(0.0, is_first=True)
        raw = np.array(ACTIONS[int(action["action"])], np.intc)
        reward = self._lab.step(raw, num_steps=self._repeat)
        self._done = not self._lab.is_running()
        return self._obs(float(reward), is_last=self._done)

    def _obs(self, reward: float, is_first: bool = False, is_last: bool = False) -> dict[str, np.ndarray]:
        # A finished level has no observations; the last step repeats the previous frame.
        if not self._done:
            observations = self._lab.observations()
            self._image = np.asarray(observations["RGB_INTERLEAVED"], np.uint8)
            if self._text:
                self._instr = self._embed(observations["INSTR"])
        obs = {
            "image": self._image,
            "reward": np.float32(reward),
            "is_first": np.asarray(is_first),
            "is_last": np.asarray(is_last),
            "is_terminal": np.asarray(is_last and self._episodic),
        }
        if self._text:
            obs["instr"] = self._instr
        return obs

    def _embed(self, text: Any) -> np.ndarray:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        tokens = _TOKENS.findall(str(text).lower())[: self.INSTR_TOKENS]
        indices = [zlib.crc32(token.encode("utf-8")) % self.VOCAB_BUCKETS for token in tokens]
        indices += [0] * (self.INSTR_TOKENS - len(indices))
        return self._embeddings[indices].reshape(-1)

    def close(self) -> None:
        self._lab.close()


def check(level: str) -> None:
    """Raise ``ValueError`` if ``level`` is not a DMLab-30 level (``dreamer_tf.envs.check_task``)."""
    if level not in LEVELS:
        close = difflib.get_close_matches(level, LEVELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"DMLab-30 has no level '{level}'.{hint} List the levels: python -m dreamer_tf.envs --domain dmlab"
        )


def make(task: str, config: Any) -> Env:
    """``dmlab_<level>`` with ``config.env.dmlab``; ``use_seed`` derives the seed from ``config.seed``."""
    settings = dict(config.env.dmlab)
    settings["size"] = tuple(settings["size"])
    use_seed = settings.pop("use_seed", False)
    # Distinct per environment in this process, reproducible for a fixed config.seed.
    seed = hash((int(config.seed), next(_seed_counter))) % (2**32 - 1) if use_seed else None
    return standardize(DMLab(task, seed=seed, **settings))
