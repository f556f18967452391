"""ProcGen (Cobbe et al. 2020), 16 games, through the ``procgen-mirror`` wheel.

The paper trains on the ``hard`` distribution with unlimited levels at 96x96: the game
renders at 512x512 (``render_mode="rgb_array"``) and the frame is resized with Pillow
(bilinear); at 64x64 the native observation is used, as in the official code.

procgen-mirror pins numpy<2 and gym3 in its metadata but runs on numpy 2; install it with
``pip install --no-deps procgen-mirror==0.10.7 gym3==0.3.3 gym==0.26.2 && pip install cffi``.

ProcGen resets itself when an episode ends; the frame that ends an episode is therefore
the first frame of the next one (as in every ProcGen wrapper). A reset requested in the
middle of an episode recreates the game so that it really starts a new episode.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from PIL import Image

from dreamer_tf.envs.base import Env, standard_obs_spaces
from dreamer_tf.envs.wrappers import require, standardize
from dreamer_tf.spaces import Space

INSTALL = "pip install --no-deps procgen-mirror==0.10.7 gym3==0.3.3 gym==0.26.2 && pip install cffi"

GAMES = (
    "bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
    "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot",
)  # fmt: skip


class ProcGen(Env):
    """One ProcGen game with 15 discrete actions."""

    def __init__(
        self,
        game: str,
        size: tuple[int, int] = (64, 64),
        resize: str = "pillow",
        distribution: str = "hard",
        seed: int | None = None,
    ) -> None:
        if game not in GAMES:
            raise ValueError(f"Unknown ProcGen game '{game}'. Games: {', '.join(GAMES)}")
        if resize != "pillow":
            raise ValueError(f"env.procgen.resize must be 'pillow', got {resize!r}")
        self._procgen = require("procgen", "procgen-mirror", INSTALL)
        self._game = game
        self._size = tuple(int(x) for x in size)
        self._distribution = distribution
        self._native = self._size == (64, 64)
        self._rng = np.random.default_rng(seed)
        self._env = self._create()
        self._actions = int(self._env.ac_space.eltype.n)
        self._done = True
        self._started = False

    def _create(self) -> Any:
        kwargs: dict[str, Any] = {
            "num": 1,
            "env_name": self._game,
            "distribution_mode": self._distribution,
            "num_levels": 0,  # unlimited levels, as in the paper
            "start_level": 0,
            "rand_seed": int(self._rng.integers(0, 2**31 - 1)),
        }
        if not self._native:
            kwargs["render_mode"] = "rgb_array"
        return self._procgen.ProcgenGym3Env(**kwargs)

    @property
    def obs_space(self) -> dict[str, Space]:
        return {"image": Space(np.uint8, (*self._size, 3)), **standard_obs_spaces()}

    @property
    def act_space(self) -> dict[str, Space]:
        return {"reset": Space(bool), "action": Space(np.int32, (), 0, self._actions)}

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"] or self._done:
            if self._started and not self._done:
                self._env.close()
                self._env = self._create()
            self._started = True
            self._done = False
            return self._obs(0.0, is_first=True)
        self._env.act(np.array([int(action["action"])], np.int32))
        reward, _, first = self._env.observe()
        # `first` after an action means the game ended and already began the next episode.
        self._done = bool(first[0])
        return self._obs(float(reward[0]), is_last=self._done, is_terminal=self._done)

    def _obs(
        self, reward: float, is_first: bool = False, is_last: bool = False, is_terminal: bool = False
    ) -> dict[str, np.ndarray]:
        if self._native:
            image = self._env.observe()[1]["rgb"][0]
        else:
            frame = self._env.get_info()[0]["rgb"]
            image = np.asarray(Image.fromarray(frame).resize((self._size[1], self._size[0]), Image.BILINEAR))
        return {
            "image": np.asarray(image, np.uint8),
            "reward": np.float32(reward),
            "is_first": np.asarray(is_first),
            "is_last": np.asarray(is_last),
            "is_terminal": np.asarray(is_terminal),
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing is best effort
            self._env.close()


def check(task: str) -> None:
    """Raise ``ValueError`` if ``task`` is not a ProcGen game (``dreamer_tf.envs.check_task``)."""
    if task not in GAMES:
        raise ValueError(f"ProcGen has the games {', '.join(GAMES)}.")


def make(task: str, config: Any) -> Env:
    """``procgen_<game>`` with ``config.env.procgen``."""
    settings = dict(config.env.procgen)
    settings["size"] = tuple(settings["size"])
    return standardize(ProcGen(task, **settings))
