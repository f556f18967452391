"""Small environments that misbehave on purpose, for the fault-injection tests (``tests/faults``).

Every class counts its ``step`` calls over its lifetime (resets included) and turns faulty from call
``at`` on; before that it is a well-behaved vector environment with episodes of ``length``
observations and reward 1 per step. Classes are module level, so a ``functools.partial`` of one
pickles for subprocess workers (``BatchEnv(parallel="process")``).

    envs = BatchEnv([functools.partial(NanRewardEnv, at=30)] * 2, parallel="none")

``HangEnv`` (``dummy_disc`` without the image) hangs for good in ``step`` after ``hang_after`` steps;
``python -m tests.helpers.faulty_envs hang AFTER MARKER -- <dreamer_tf flags>`` runs the training CLI
with environment 0 replaced by one: the way to hang a real run.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dreamer_tf.envs.base import Env, standard_obs_spaces
from dreamer_tf.envs.dummy import Dummy
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


class HangEnv:
    """``dummy_disc`` without the image whose ``step`` hangs for good after ``hang_after`` steps.

    Before it hangs it writes ``marker`` (when given: the step number and the process id), so a test
    knows the run is stuck in ``step`` and in which process.
    It sleeps in Python, the way a blocked socket read or a stuck simulator loop looks from outside.
    """

    def __init__(self, hang_after: int | None = None, marker: str | None = None) -> None:
        self._env = Dummy("disc", size=(8, 8), length=10, image=False)
        self._hang_after = hang_after
        self._marker = marker
        self._steps = 0

    @property
    def obs_space(self) -> dict[str, Any]:
        return self._env.obs_space

    @property
    def act_space(self) -> dict[str, Any]:
        return self._env.act_space

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        self._steps += 1
        if self._hang_after is not None and self._steps > self._hang_after:
            if self._marker:
                partial = Path(f"{self._marker}.{os.getpid()}.tmp")
                partial.write_text(f"{self._steps} {os.getpid()}")
                os.replace(partial, self._marker)  # whole or absent: a reader never sees it half written
            while True:
                time.sleep(3600)
        return self._env.step(action)

    def close(self) -> None:
        self._env.close()


def _hang_main(argv: list[str]) -> int:
    """``hang AFTER MARKER -- <flags>``: the dreamer_tf CLI with environment 0 a ``HangEnv``."""
    from dreamer_tf.envs.parallel import BatchEnv
    from dreamer_tf.run import train

    after, marker, separator, *flags = argv
    assert separator == "--", "usage: hang AFTER MARKER -- <dreamer_tf flags>"

    def make_envs(config: Any, mode: str = "train") -> BatchEnv:
        count = config.run.envs if mode == "train" else config.run.eval_envs
        fns = [functools.partial(HangEnv, int(after) if i == 0 else None, marker) for i in range(count)]
        parallel = config.run.parallel
        if parallel == "auto":
            parallel = "process" if count > 1 else "none"
        return BatchEnv(fns, parallel=parallel, timeout=config.run.episode_timeout)

    train.make_envs = make_envs
    return train.main(flags)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    sys.exit({"hang": _hang_main}[command](rest))
