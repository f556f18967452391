"""A deterministic stand-in environment for tests, benchmarks and debugging: ``dummy_<task>``.

Tasks:

- ``disc`` / ``cont``: the official dummy task. A 64x64x3 ``image``, a 7-dim ``vector``, reward 1 on
  every step after the first, episodes of ``config.env.dummy.length`` steps that end terminally.
  One action key ``action``: 5 classes (``disc``) or 6 floats in [-1, 1] (``cont``; fewer with
  ``config.env.dummy.dims``).
- ``disc_match`` / ``cont_match``: a tiny learnable variant. The observation shows a target that
  changes every step (``vector[:5]`` one-hot for ``disc``, ``vector[:dims]`` for ``cont``); the reward
  is 1 for choosing the shown class (``disc``) or ``1 - mean|action - target| / 2`` (``cont``), so
  a random policy scores about 0.2 (disc) or 0.67 (cont) per step and a perfect one 1.

``config.env.dummy.image: false`` drops the image (vector-only tasks train much faster on the CPU).

    env = make("disc", config)                      # or dreamer_tf.envs.make("dummy_disc", config)
    obs = env.step({"reset": True, "action": np.int32(0)})
    obs = env.step({"reset": False, "action": np.int32(3)})   # reward 1.0

Observations depend only on the step count (and the seed for the ``match`` targets), so two
copies of the environment stepped with the same actions give identical observations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dreamer_tf.envs.base import Env, standard_obs_spaces
from dreamer_tf.spaces import Space

DISCRETE_CLASSES = 5
CONTINUOUS_SIZE = 6
VECTOR_SIZE = 7
TASKS = ("disc", "cont", "disc_match", "cont_match")


class Dummy(Env):
    """The deterministic dummy environment; see the module docstring for the tasks.

    env = Dummy("cont", size=(32, 32), length=10)
    obs = env.step({"reset": True, "action": np.zeros(6, np.float32)})
    """

    def __init__(
        self,
        task: str,
        size: tuple[int, int] = (64, 64),
        length: int = 100,
        seed: int = 0,
        image: bool = True,
        dims: int = CONTINUOUS_SIZE,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"Unknown dummy task '{task}'. Tasks: {', '.join('dummy_' + t for t in TASKS)}")
        if int(length) < 1:
            raise ValueError(f"env.dummy.length must be at least 1, got {length}")
        if not 1 <= int(dims) <= CONTINUOUS_SIZE:
            raise ValueError(f"env.dummy.dims must be between 1 and {CONTINUOUS_SIZE}, got {dims}")
        self._discrete = task.startswith("disc")
        self._dims = int(dims)
        self._match = task.endswith("_match")
        self._size = (int(size[0]), int(size[1]))
        self._length = int(length)
        self._seed = int(seed)
        self._image = bool(image)
        self._count = 0
        self._done = True
        self._target = np.zeros(CONTINUOUS_SIZE, np.float32)

    @property
    def obs_space(self) -> dict[str, Space]:
        image = {"image": Space(np.uint8, (*self._size, 3))} if self._image else {}
        return {**image, "vector": Space(np.float32, (VECTOR_SIZE,)), **standard_obs_spaces()}

    @property
    def act_space(self) -> dict[str, Space]:
        if self._discrete:
            action = Space(np.int32, (), 0, DISCRETE_CLASSES)
        else:
            action = Space(np.float32, (self._dims,), -1.0, 1.0)
        return {"reset": Space(bool), "action": action}

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"] or self._done:
            self._count = 0
            self._done = False
            self._new_target()
            return self._obs(0.0, is_first=True)
        reward = self._reward(action["action"]) if self._match else 1.0
        self._count += 1
        self._done = self._count >= self._length
        self._new_target()
        return self._obs(reward, is_last=self._done, is_terminal=self._done)

    def state(self) -> dict[str, Any]:
        return {"count": self._count, "done": self._done, "target": self._target.copy()}

    def load_state(self, state: dict[str, Any]) -> None:
        self._count, self._done = int(state["count"]), bool(state["done"])
        self._target = np.asarray(state["target"], np.float32).copy()

    def _new_target(self) -> None:
        if not self._match:
            return
        # Seeded by (seed, step) only, so the targets are reproducible without carrying RNG state.
        rng = np.random.default_rng((self._seed, self._count))
        if self._discrete:
            self._target = np.eye(CONTINUOUS_SIZE, dtype=np.float32)[rng.integers(DISCRETE_CLASSES)]
        else:
            self._target = np.zeros(CONTINUOUS_SIZE, np.float32)
            self._target[: self._dims] = rng.uniform(-1, 1, self._dims)

    def _reward(self, action: Any) -> float:
        if self._discrete:
            return float(int(action) == int(np.argmax(self._target)))
        error = np.abs(np.clip(np.asarray(action, np.float32), -1, 1) - self._target[: self._dims]).mean()
        return float(1.0 - error / 2.0)

    def _obs(self, reward: float, is_first: bool = False, is_last: bool = False, is_terminal: bool = False):
        progress = self._count / self._length
        obs = {}
        if self._image:
            image = np.zeros((*self._size, 3), np.uint8)
            # The filled rows show the episode's progress: something a world model can learn to predict.
            image[: round(progress * self._size[0])] = 255
            obs["image"] = image
        vector = np.zeros(VECTOR_SIZE, np.float32)
        if self._match:
            vector[:CONTINUOUS_SIZE] = self._target
        vector[-1] = progress
        return {
            **obs,
            "vector": vector,
            "reward": np.float32(reward),
            "is_first": np.asarray(is_first),
            "is_last": np.asarray(is_last),
            "is_terminal": np.asarray(is_terminal),
        }


def check(task: str) -> None:
    """Raise ``ValueError`` if ``task`` is not a dummy task (``dreamer_tf.envs.check_task``)."""
    if task not in TASKS:
        raise ValueError(f"the dummy domain has the tasks {', '.join('dummy_' + t for t in TASKS)}.")


def make(task: str, config: Any) -> Env:
    """``dummy_disc``, ``dummy_cont`` (and the ``_match`` variants) with ``config.env.dummy``."""
    settings = config.env.dummy
    seed = int(getattr(config, "seed", 0) or 0)
    image = bool(settings.get("image", True))
    dims = int(settings.get("dims", CONTINUOUS_SIZE))
    return Dummy(
        task, size=tuple(settings.size), length=int(settings.length), seed=seed, image=image, dims=dims
    )
