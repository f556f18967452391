"""Wrappers that turn a suite's raw adapter into an environment of the contract.

``standardize(env)`` applies what the official code applies to every
environment (``dreamerv3/main.py: wrap_env``): continuous actions are
rescaled to [-1, 1] and clipped, vectors become float32, integers int32 and
images stay uint8. The remaining helpers are shared by several suites:

    env = standardize(TimeLimit(FromDM(dm_env_instance), length=500))
    obs = env.step({"reset": True, "action": np.zeros(6, np.float32)})
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import numpy as np

from dreamer_tf.envs.base import RESERVED_OBS_KEYS, Env, standard_obs_spaces
from dreamer_tf.spaces import Space


class MissingPackageError(ImportError):
    """A domain's package is not installed; the message says how to install it."""


def require(module: str, package: str, install: str) -> Any:
    """Import ``module`` or raise a MissingPackageError that names ``package`` and ``install``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingPackageError(
            f"This domain needs the package '{package}' (import '{module}' failed: {error}). "
            f"Install it with: {install}"
        ) from error


class Wrapper(Env):
    """Forwards spaces, ``step``, ``close`` and the saved state to ``env``; attributes too.

    A wrapper whose own attributes change while stepping names them in ``STATE``; they are saved
    beside the wrapped environment's state.
    """

    STATE: tuple[str, ...] = ()

    def __init__(self, env: Env) -> None:
        self.env = env

    @property
    def obs_space(self) -> dict[str, Space]:
        return self.env.obs_space

    @property
    def act_space(self) -> dict[str, Space]:
        return self.env.act_space

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()

    def state(self) -> dict[str, Any] | None:
        inner = self.env.state()
        if inner is None:
            return None
        return {"env": inner, **{name: getattr(self, name) for name in self.STATE}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.env.load_state(state["env"])
        for name in self.STATE:
            setattr(self, name, state[name])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)


class NormalizeAction(Wrapper):
    """Expose the bounded dimensions of a continuous action as [-1, 1] and rescale them back.

    Dimensions with an infinite bound are passed through unchanged, as in the official code.
    """

    def __init__(self, env: Env, key: str = "action") -> None:
        super().__init__(env)
        self._key = key
        space = env.act_space[key]
        low = np.asarray(space.low, np.float64)
        high = np.asarray(space.high, np.float64)
        self._mask = np.isfinite(low) & np.isfinite(high)
        self._low = np.where(self._mask, low, -1.0)
        self._high = np.where(self._mask, high, 1.0)
        new_low = np.where(self._mask, -1.0, low)
        new_high = np.where(self._mask, 1.0, high)
        self._space = Space(np.float32, space.shape, new_low, new_high)

    @property
    def act_space(self) -> dict[str, Space]:
        return {**self.env.act_space, self._key: self._space}

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        value = np.asarray(action[self._key], np.float64)
        original = (value + 1.0) / 2.0 * (self._high - self._low) + self._low
        original = np.where(self._mask, original, value)
        return self.env.step({**action, self._key: original})


class ClipAction(Wrapper):
    """Clip a continuous action into its declared bounds (policies may overshoot slightly)."""

    def __init__(self, env: Env, key: str = "action") -> None:
        super().__init__(env)
        self._key = key
        space = env.act_space[key]
        self._low, self._high = space.low, space.high

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        clipped = np.clip(np.asarray(action[self._key], np.float32), self._low, self._high)
        return self.env.step({**action, self._key: clipped})


def _unified(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or dtype == np.uint8:
        return dtype
    if np.issubdtype(dtype, np.floating):
        return np.dtype(np.float32)
    if np.issubdtype(dtype, np.integer):
        return np.dtype(np.int32)
    return dtype


class UnifyDtypes(Wrapper):
    """float* -> float32, int* -> int32, uint8 and bool unchanged, for observations and actions."""

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self._obs_space = {k: self._convert(v) for k, v in env.obs_space.items()}
        self._act_space = {k: self._convert(v) for k, v in env.act_space.items()}
        self._act_inner = {k: v.dtype for k, v in env.act_space.items()}

    @staticmethod
    def _convert(space: Space) -> Space:
        dtype = _unified(space.dtype)
        if dtype == space.dtype:
            return space
        low, high = space.low, space.high
        if np.issubdtype(dtype, np.integer) and np.issubdtype(space.dtype, np.integer):
            info = np.iinfo(dtype)
            low = np.clip(np.asarray(low, np.int64), info.min, info.max)
            high = np.clip(np.asarray(high, np.int64), info.min, info.max)
        return Space(dtype, space.shape, low, high)

    @property
    def obs_space(self) -> dict[str, Space]:
        return self._obs_space

    @property
    def act_space(self) -> dict[str, Space]:
        return self._act_space

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        inner = {
            k: np.asarray(v, self._act_inner[k]) if k in self._act_inner else v for k, v in action.items()
        }
        obs = self.env.step(inner)
        return {k: np.asarray(v, self._obs_space[k].dtype) for k, v in obs.items()}


class ActionRepeat(Wrapper):
    """Repeat each action ``repeat`` times, summing rewards; stop early when the episode ends."""

    def __init__(self, env: Env, repeat: int) -> None:
        super().__init__(env)
        self._repeat = int(repeat)

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"]:
            return self.env.step(action)
        reward = 0.0
        for _ in range(self._repeat):
            obs = self.env.step(action)
            reward += float(obs["reward"])
            if obs["is_last"] or obs["is_terminal"] or obs["is_first"]:
                break
        return {**obs, "reward": np.float32(reward)}


class TimeLimit(Wrapper):
    """End episodes after ``length`` agent steps (truncation: ``is_last`` without ``is_terminal``).

    ``length`` 0 or None disables the limit.
    """

    STATE = ("_step", "_done")

    def __init__(self, env: Env, length: int | None) -> None:
        super().__init__(env)
        self._length = int(length or 0)
        self._step = 0
        self._done = True

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"] or self._done:
            self._step = 0
            obs = self.env.step({**action, "reset": True})
        else:
            self._step += 1
            obs = self.env.step(action)
            if self._length and self._step >= self._length:
                obs = {**obs, "is_last": np.asarray(True)}
        self._done = bool(obs["is_last"])
        return obs


def standardize(env: Env) -> Env:
    """Apply the official ``wrap_env`` chain: normalise and clip continuous actions, unify dtypes."""
    for key, space in env.act_space.items():
        if key != "reset" and not space.discrete:
            env = NormalizeAction(env, key)
    env = UnifyDtypes(env)
    overlap = set(env.obs_space) & set(env.act_space)
    assert not overlap, f"observation and action keys overlap: {sorted(overlap)}"
    for key in RESERVED_OBS_KEYS:
        assert key in env.obs_space, f"observation space lacks '{key}': {sorted(env.obs_space)}"
    for key, space in env.act_space.items():
        if key != "reset" and not space.discrete:
            env = ClipAction(env, key)
    return env


def convert_dm_spec(spec: Any) -> Space:
    """A dm_env spec (DiscreteArray, BoundedArray or Array) as a Space."""
    if hasattr(spec, "num_values"):
        return Space(spec.dtype, (), 0, int(spec.num_values))
    if hasattr(spec, "minimum"):
        return Space(spec.dtype, spec.shape, spec.minimum, spec.maximum)
    return Space(spec.dtype, spec.shape)


class FromDM(Env):
    """A ``dm_env.Environment`` under the step-with-reset contract.

    Observation keys are kept (``/`` becomes ``_``, an observation named ``reward``
    becomes ``obs_reward``, empty arrays are dropped). ``flatten=True`` reshapes every
    non-image observation to a vector (scalars become shape (1,)), the way the
    encoder consumes them. ``is_terminal`` is ``discount == 0`` on a last step.
    """

    def __init__(self, env: Any, obs_key: str = "observation", flatten: bool = False) -> None:
        self._env = env
        self._obs_key = obs_key
        self._flatten = flatten
        obs_spec = env.observation_spec()
        self._obs_dict = isinstance(obs_spec, dict)
        specs = dict(obs_spec) if self._obs_dict else {obs_key: obs_spec}
        self._renames: dict[str, str] = {}
        self._spaces: dict[str, Space] = {}
        for key, spec in specs.items():
            if int(np.prod(spec.shape)) == 0:
                continue
            name = "obs_reward" if key == "reward" else key.replace("/", "_")
            space = convert_dm_spec(spec)
            if flatten and not space.is_image:
                space = Space(
                    space.dtype, (int(np.prod(space.shape)),), space.low.ravel(), space.high.ravel()
                )
            self._renames[key] = name
            self._spaces[name] = space
        self._act_spec = env.action_spec()
        assert not isinstance(self._act_spec, dict), "dict action specs are not supported"
        self._done = True

    @property
    def dm_env(self) -> Any:
        return self._env

    @property
    def obs_space(self) -> dict[str, Space]:
        return {**standard_obs_spaces(), **self._spaces}

    @property
    def act_space(self) -> dict[str, Space]:
        return {"reset": Space(bool), "action": convert_dm_spec(self._act_spec)}

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"] or self._done:
            time_step = self._env.reset()
        else:
            time_step = self._env.step(action["action"])
        self._done = bool(time_step.last())
        return self._obs(time_step)

    def state(self) -> dict[str, Any] | None:
        inner = self._dm_state()
        return None if inner is None else {"dm": inner, "done": self._done}

    def load_state(self, state: dict[str, Any]) -> None:
        self._load_dm_state(state["dm"])
        self._done = bool(state["done"])

    def _dm_state(self) -> Any:
        """The wrapped dm_env's state mid-episode; a generic dm_env has none (subclasses add it)."""
        return None

    def _load_dm_state(self, state: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot restore a saved state.")

    def _obs(self, time_step: Any) -> dict[str, np.ndarray]:
        raw = time_step.observation
        raw = dict(raw) if self._obs_dict else {self._obs_key: raw}
        obs: dict[str, Any] = {}
        for key, name in self._renames.items():
            value = np.asarray(raw[key])
            obs[name] = value.reshape(self._spaces[name].shape)
        first = bool(time_step.first())
        last = bool(time_step.last())
        obs["reward"] = np.float32(0.0 if first or time_step.reward is None else time_step.reward)
        obs["is_first"] = np.asarray(first)
        obs["is_last"] = np.asarray(last)
        obs["is_terminal"] = np.asarray(last and not first and float(time_step.discount) == 0.0)
        return obs

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing is best effort
            self._env.close()
