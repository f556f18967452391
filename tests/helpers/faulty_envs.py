"""Small environments that misbehave on purpose, for the fault-injection tests (``tests/faults``).

Every class counts its ``step`` calls over its lifetime (resets included) and turns faulty from call
``at`` on; before that it is a well-behaved vector environment with episodes of ``length``
observations and reward 1 per step. Classes are module level, so a ``functools.partial`` of one
pickles for subprocess workers (``BatchEnv(parallel="process")``).

    envs = BatchEnv([functools.partial(NanRewardEnv, at=30)] * 2, parallel="none")
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from dreamer_tf.envs.base import Env, standard_obs_spaces
from dreamer_tf.spaces import Space


class _CountingEnv(Env):
    """A deterministic vector environment that knows how many steps it was asked for."""

    def __init__(self, at: int = 50, length: int = 10) -> None:
        self.at, self.length = int(at), int(length)
        self.calls = 0
        self.t = 0
        self.done = True

    @property
    def obs_space(self) -> dict[str, Space]:
        return {"vector": Space(np.float32, (3,)), **standard_obs_spaces()}

    @property
    def act_space(self) -> dict[str, Space]:
        return {"reset": Space(bool), "action": Space(np.int32, (), 0, 3)}

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        self.calls += 1
        if action["reset"] or self.done:
            self.t, self.done = 0, False
            obs = self._obs(0.0, first=True)
        else:
            self.t += 1
            self.done = self.t >= self.length - 1
            obs = self._obs(1.0, last=self.done)
        return self.fault(obs) if self.calls >= self.at else obs

    def fault(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return obs

    def _obs(self, reward: float, first: bool = False, last: bool = False) -> dict[str, np.ndarray]:
        return {
            "vector": np.full(3, self.t, np.float32),
            "reward": np.float32(reward),
            "is_first": np.bool_(first),
            "is_last": np.bool_(last),
            "is_terminal": np.bool_(last),
        }


class NanRewardEnv(_CountingEnv):
    """Reward ``value`` (NaN by default; ``float("inf")`` for an infinite one) from step ``at`` on."""

    def __init__(self, at: int = 50, length: int = 10, value: float = float("nan")) -> None:
        super().__init__(at, length)
        self.value = float(value)

    def fault(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**obs, "reward": np.float32(self.value)}


class NanObsEnv(_CountingEnv):
    """``vector[1]`` is NaN from step ``at`` on."""

    def fault(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vector = obs["vector"].copy()
        vector[1] = np.nan
        return {**obs, "vector": vector}


class RaiseInStepEnv(_CountingEnv):
    """``step`` raises ``RuntimeError`` at step ``at``."""

    def fault(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError(f"RaiseInStepEnv failed on purpose at step {self.calls}")


class DieInStepEnv(_CountingEnv):
    """The process ends at once (``os._exit``) at step ``at``: a worker that crashed in native code."""

    def fault(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        os._exit(3)
