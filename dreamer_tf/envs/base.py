"""The environment contract every domain adapter implements.

An environment is stepped with a dict of actions that always holds a boolean
``reset`` key; there is no separate ``reset()`` call, so a batch of
environments can be driven with one uniform call:

    env = make("dmc_cartpole_balance", config)
    obs = env.step({"reset": True, "action": zeros})      # is_first=True
    while not obs["is_last"]:
        obs = env.step({"reset": False, "action": policy(obs)})
    env.close()

Every observation dict holds the keys of ``obs_space``, which always include

- ``reward`` (float32 scalar): reward received on entering this step;
- ``is_first`` (bool): first step of an episode (reward 0);
- ``is_last`` (bool): last step of an episode, terminal or truncated;
- ``is_terminal`` (bool): the episode ended in a terminal state (no bootstrap).

After a step with ``is_last=True`` the next ``step`` call starts a new episode
whatever its ``reset`` flag says. Images are ``uint8`` arrays (H, W, C);
vectors are ``float32``. ``act_space`` holds ``reset`` plus the agent's action
keys (usually one, ``action``).

An environment that can save itself mid-episode implements ``state()`` (a tree
of dicts, lists, scalars and arrays that a checkpoint stores) and
``load_state(state)``; a resumed run then continues its episodes where they
stopped. The default ``state()`` returns None: a resumed run starts new episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dreamer_tf.spaces import Space

RESERVED_OBS_KEYS = ("reward", "is_first", "is_last", "is_terminal")


class Env:
    """Base class for environments; subclasses define the spaces and ``step``."""

    @property
    def obs_space(self) -> dict[str, Space]:
        raise NotImplementedError

    @property
    def act_space(self) -> dict[str, Space]:
        raise NotImplementedError

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def state(self) -> Any:
        """The state mid-episode (dicts, lists, scalars, arrays), or None when it cannot be saved."""
        return None

    def load_state(self, state: Any) -> None:
        """Continue from a ``state()`` of an environment made with the same arguments."""
        raise NotImplementedError(f"{type(self).__name__} cannot restore a saved state.")

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def standard_obs_spaces() -> dict[str, Space]:
    """The four keys every environment reports besides its own observations."""
    return {
        "reward": Space(np.float32),
        "is_first": Space(bool),
        "is_last": Space(bool),
        "is_terminal": Space(bool),
    }
