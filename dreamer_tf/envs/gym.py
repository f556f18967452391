"""Any Gymnasium environment under the step-with-reset contract: ``gym_<EnvId>``.

    env = FromGym(gymnasium.make("Pendulum-v1"))          # or FromGym("Pendulum-v1")
    obs = env.step({"reset": True, "action": np.zeros(1, np.float32)})
    obs = env.step({"reset": False, "action": np.array([0.5], np.float32)})   # torque 1.0

or from the command line: ``python -m dreamer_tf --task gym_CartPole-v1``.

Spaces are converted as the agent expects them:

- observations: a ``uint8`` Box of shape (H, W, C) (or (H, W), or channel-first (C, H, W)) becomes an
  ``image`` (H, W, C); any other Box becomes a ``float32`` vector; ``Discrete`` becomes a one-hot
  float32 vector; ``MultiBinary`` / ``MultiDiscrete`` become float32 vectors; ``Dict`` and ``Tuple``
  spaces are flattened into keys ``outer/inner`` and ``outer/0``. A single non-dict observation
  is stored under ``obs_key`` (default: ``image`` for images, ``vector`` otherwise).
- actions: ``Discrete`` becomes an int32 scalar with ``n`` classes; a float ``Box`` is exposed as
  [-1, 1] and rescaled to the environment's bounds (dimensions with an infinite bound receive the
  agent's value unchanged); ``MultiDiscrete`` and ``MultiBinary`` become one categorical key per
  dimension (``action/0``, ``action/1``, ...); ``Dict`` and ``Tuple`` actions are flattened too.
- ``is_terminal`` is Gymnasium's ``terminated``; ``is_last`` is ``terminated or truncated``.
- an environment made with ``render_mode="rgb_array"`` (``--env.gym.render_mode rgb_array``) adds its
  rendered frame as ``log/image`` (for episode videos, never seen by the agent), subsampled to at most
  ``MAX_FRAME_SIZE`` pixels on its long side.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable
from typing import Any

import numpy as np

from dreamer_tf.envs.base import RESERVED_OBS_KEYS, Env, standard_obs_spaces
from dreamer_tf.envs.wrappers import MissingPackageError, require
from dreamer_tf.spaces import Space

INSTALL = "pip install gymnasium"

# Gymnasium namespaces whose environments are registered by importing another package.
NAMESPACE_PACKAGES = {
    "ALE": ("ale_py", "ale-py", "pip install ale-py"),
}

# Rendered frames (``log/image``) are subsampled to this many pixels on their long side at most: CartPole's
# 400x600 frames would otherwise take 0.7 GB for one recorded 1000-step episode.
MAX_FRAME_SIZE = 256

Path = tuple[Any, ...]  # keys (dict) and indices (tuple) leading from the root space to a leaf


class FromGym(Env):
    """Adapter from a ``gymnasium.Env`` (or an id for ``gymnasium.make``) to ``dreamer_tf.envs.base.Env``.

    Args:
        env: a Gymnasium environment, or its id (then ``make_kwargs`` go to ``gymnasium.make``).
        obs_key: key of a single (non-dict) observation; ``None`` picks ``image`` or ``vector``.
        act_key: key of a single (non-dict) action.
        seed: passed to the first ``reset`` so the episode sequence is reproducible.
        normalize_actions: expose bounded float actions as [-1, 1] (the agent's range) and rescale.

        env = FromGym("CartPole-v1", seed=0)
        env.act_space["action"]        # Space(int32, shape=(), low=0, high=2)
    """

    def __init__(
        self,
        env: Any,
        obs_key: str | None = None,
        act_key: str = "action",
        seed: int | None = None,
        normalize_actions: bool = True,
        **make_kwargs: Any,
    ) -> None:
        gymnasium = require("gymnasium", "gymnasium", INSTALL)
        if isinstance(env, str):
            env = make_gym_env(env, **make_kwargs)
        elif make_kwargs:
            raise TypeError(f"Keyword arguments {sorted(make_kwargs)} only apply when env is an id string.")
        if not isinstance(env, gymnasium.Env):
            raise TypeError(f"FromGym needs a gymnasium.Env or an environment id, got {type(env).__name__}.")
        self._env = env
        self._gym = gymnasium
        self._seed = seed
        self._normalize = normalize_actions
        self._done = True
        self._info: dict[str, Any] = {}
        self._obs_leaves = _leaves(env.observation_space, gymnasium)
        self._act_leaves = _leaves(env.action_space, gymnasium)
        single_obs = len(self._obs_leaves) == 1 and self._obs_leaves[0][0] == ()
        self._obs_converters = [
            _ObsConverter(path, space, gymnasium, obs_key if single_obs else None)
            for path, space in self._obs_leaves
        ]
        self._act_converters = [
            _ActConverter(path, space, gymnasium, act_key, normalize_actions)
            for path, space in self._act_leaves
        ]
        self._obs_space = {}
        for converter in self._obs_converters:
            self._obs_space.update(converter.spaces)
        clash = set(self._obs_space) & set(RESERVED_OBS_KEYS)
        if clash:
            raise ValueError(
                f"Observation keys {sorted(clash)} of {env} collide with the reserved keys {RESERVED_OBS_KEYS}; "
                "rename them with a gymnasium wrapper."
            )
        self._obs_space.update(standard_obs_spaces())
        self._render = getattr(env, "render_mode", None) == "rgb_array"
        if self._render:
            # A frame's size is known once the environment has been reset; the first step's reset
            # reseeds with the same seed, so the episodes are the same as without rendering.
            self._env.reset(seed=seed)
            try:
                frame = self._frame()
            except gymnasium.error.DependencyNotInstalled as error:  # e.g. pygame for classic control
                raise MissingPackageError(
                    f"Rendering {env} needs a package that is not installed: {error}"
                ) from error
            self._obs_space["log/image"] = Space(np.uint8, frame.shape)
        self._act_space = {"reset": Space(bool)}
        for converter in self._act_converters:
            self._act_space.update(converter.spaces)
        overlap = set(self._obs_space) & set(self._act_space)
        if overlap:
            raise ValueError(f"Observation and action keys overlap: {sorted(overlap)}; pass another act_key.")

    @property
    def env(self) -> Any:
        """The wrapped Gymnasium environment."""
        return self._env

    @property
    def info(self) -> dict[str, Any]:
        """The ``info`` dict of the latest ``reset`` or ``step``."""
        return self._info

    @property
    def obs_space(self) -> dict[str, Space]:
        return self._obs_space

    @property
    def act_space(self) -> dict[str, Space]:
        return self._act_space

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"] or self._done:
            seed, self._seed = self._seed, None  # seed only the first reset; later ones continue its RNG
            obs, self._info = self._env.reset(seed=seed)
            self._done = False
            return self._obs(obs, 0.0, is_first=True)
        gym_action = self._unflatten_action(action)
        obs, reward, terminated, truncated, self._info = self._env.step(gym_action)
        self._done = bool(terminated or truncated)
        return self._obs(obs, reward, is_last=self._done, is_terminal=bool(terminated))

    def close(self) -> None:
        # Closing a broken env must not hide the error that made the caller close it.
        with contextlib.suppress(Exception):
            self._env.close()

    def _obs(
        self, obs: Any, reward: Any, is_first=False, is_last=False, is_terminal=False
    ) -> dict[str, np.ndarray]:
        out = {}
        for converter in self._obs_converters:
            out.update(converter(_get(obs, converter.path)))
        out["reward"] = np.float32(reward)
        out["is_first"] = np.asarray(is_first)
        out["is_last"] = np.asarray(is_last)
        out["is_terminal"] = np.asarray(is_terminal)
        if self._render:
            out["log/image"] = self._frame()
        return out

    def _frame(self) -> np.ndarray:
        """The rendered frame as uint8 (H, W, 3), subsampled to ``MAX_FRAME_SIZE`` at most."""
        frame = np.asarray(self._env.render())
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, -1)
        stride = -(-max(frame.shape[:2]) // MAX_FRAME_SIZE)
        return np.ascontiguousarray(frame[::stride, ::stride, :3], dtype=np.uint8)

    def _unflatten_action(self, action: dict[str, Any]) -> Any:
        if len(self._act_converters) == 1 and self._act_converters[0].path == ():
            return self._act_converters[0](action)
        root: Any = {}
        for converter in self._act_converters:
            _put(root, converter.path, converter(action))
        return _to_gym_containers(root, self._env.action_space, self._gym)


class _ObsConverter:
    """One leaf of the observation space -> one (or a few) keys of ours."""

    def __init__(self, path: Path, space: Any, gym: Any, key: str | None) -> None:
        self.path = path
        spaces = gym.spaces
        base = "/".join(str(p) for p in path)
        self._transpose = False
        self._expand = False
        self._onehot = 0
        self._start = 0
        if isinstance(space, spaces.Box):
            shape = tuple(space.shape)
            if (
                space.dtype == np.uint8
                and len(shape) in (2, 3)
                and min(shape[:2]) >= 8
                or _channel_first(space)
            ):
                if len(shape) == 2:
                    self._expand, shape = True, (*shape, 1)
                elif _channel_first(space):
                    self._transpose, shape = True, (shape[1], shape[2], shape[0])
                self.key = key or base or "image"
                self.space = Space(np.uint8, shape)
            else:
                self.key = key or base or "vector"
                low, high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
                self.space = Space(np.float32, shape, low, high)
        elif isinstance(space, spaces.Discrete):
            # One-hot, so the encoder sees a category rather than a magnitude.
            self._onehot, self._start = int(space.n), int(space.start)
            self.key = key or base or "vector"
            self.space = Space(np.float32, (self._onehot,), 0.0, 1.0)
        elif isinstance(space, (spaces.MultiBinary, spaces.MultiDiscrete)):
            self.key = key or base or "vector"
            self.space = Space(np.float32, tuple(space.shape))
        else:
            raise NotImplementedError(
                f"Observation space {space} at '{base or '<root>'}' is not supported "
                "(Box, Discrete, MultiBinary, MultiDiscrete, Dict and Tuple are). "
                "Convert it with a gymnasium ObservationWrapper."
            )
        self.spaces = {self.key: self.space}

    def __call__(self, value: Any) -> dict[str, np.ndarray]:
        if self._onehot:
            out = np.zeros(self._onehot, np.float32)
            out[int(value) - self._start] = 1.0
            return {self.key: out}
        array = np.asarray(value)
        if self._expand:
            array = array[..., None]
        elif self._transpose:
            array = np.transpose(array, (1, 2, 0))
        return {self.key: np.asarray(array, self.space.dtype)}


class _ActConverter:
    """One leaf of the action space: our key(s) -> the value Gymnasium expects."""

    def __init__(self, path: Path, space: Any, gym: Any, key: str, normalize: bool) -> None:
        self.path = path
        spaces = gym.spaces
        base = "/".join(str(p) for p in path) or key
        self._dtype = space.dtype
        self._convert: Callable[[dict[str, Any]], Any]
        if isinstance(space, spaces.Discrete):
            start = int(space.start)
            self.spaces = {base: Space(np.int32, (), 0, int(space.n))}
            self._convert = lambda a: np.asarray(int(a[base]) + start, space.dtype)
        elif isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating):
            low = np.asarray(space.low, np.float64)
            high = np.asarray(space.high, np.float64)
            finite = np.isfinite(low) & np.isfinite(high)
            if normalize:
                self.spaces = {base: Space(np.float32, space.shape, -1.0, 1.0)}
            else:
                self.spaces = {base: Space(np.float32, space.shape, low, high)}

            def convert(action: dict[str, Any]) -> np.ndarray:
                value = np.asarray(action[base], np.float64)
                if normalize:
                    # Policies may overshoot [-1, 1] slightly (e.g. Gaussian noise): clip, then rescale.
                    value = np.clip(value, -1.0, 1.0)
                    scaled = low + (value + 1.0) / 2.0 * (high - low)
                    value = np.where(finite, scaled, value)
                else:
                    value = np.clip(value, low, high)
                return value.astype(space.dtype)

            self._convert = convert
        elif isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
            if isinstance(space, spaces.MultiBinary):
                nvec, start = np.full(space.shape, 2), np.zeros(space.shape, np.int64)
            else:
                nvec, start = np.asarray(space.nvec), np.asarray(space.start)
            # One categorical key per dimension: the agent's discrete heads need equal classes per key.
            keys = [f"{base}/{i}" for i in range(nvec.size)]
            self.spaces = {k: Space(np.int32, (), 0, int(n)) for k, n in zip(keys, nvec.flat)}

            def convert(action: dict[str, Any]) -> np.ndarray:
                flat = np.array([int(action[k]) for k in keys], np.int64)
                return (flat.reshape(nvec.shape) + start).astype(space.dtype)

            self._convert = convert
        else:
            raise NotImplementedError(
                f"Action space {space} at '{base}' is not supported (Discrete, float Box, MultiDiscrete, "
                "MultiBinary, Dict and Tuple are). Convert it with a gymnasium ActionWrapper."
            )

    def __call__(self, action: dict[str, Any]) -> Any:
        return self._convert(action)


def _channel_first(space: Any) -> bool:
    shape = tuple(space.shape)
    return space.dtype == np.uint8 and len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4)


def _leaves(space: Any, gym: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    """Flatten Dict and Tuple spaces into (path, leaf space) pairs in a fixed order."""
    if isinstance(space, gym.spaces.Dict):
        return [leaf for key, sub in space.spaces.items() for leaf in _leaves(sub, gym, (*path, key))]
    if isinstance(space, gym.spaces.Tuple):
        return [leaf for i, sub in enumerate(space.spaces) for leaf in _leaves(sub, gym, (*path, i))]
    return [(path, space)]


def _get(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


def _put(root: dict, path: Path, value: Any) -> None:
    node = root
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _to_gym_containers(node: Any, space: Any, gym: Any) -> Any:
    # Rebuild tuples where the action space has Tuple spaces (``_put`` builds dicts keyed by index).
    if isinstance(space, gym.spaces.Dict):
        return {k: _to_gym_containers(node[k], s, gym) for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(_to_gym_containers(node[i], s, gym) for i, s in enumerate(space.spaces))
    return node


def _gymnasium(env_id: str) -> Any:
    """The ``gymnasium`` module, with the package that registers ``env_id``'s namespace imported."""
    gymnasium = require("gymnasium", "gymnasium", INSTALL)
    namespace = env_id.split("/")[0] if "/" in env_id else None
    if namespace in NAMESPACE_PACKAGES:
        # Gymnasium 1.x no longer imports plugin packages itself; importing them registers their ids.
        module, package, install = NAMESPACE_PACKAGES[namespace]
        imported = require(module, package, install)
        if hasattr(gymnasium, "register_envs"):
            gymnasium.register_envs(imported)
    return gymnasium


def check(env_id: str) -> None:
    """Raise ``ValueError`` if Gymnasium has no ``env_id`` (``dreamer_tf.envs.check_task``).

    Looks the id up in the registry only; nothing is created.
    """
    gymnasium = _gymnasium(env_id)
    error_types = gymnasium.error
    try:
        gymnasium.spec(env_id)
    except (error_types.NameNotFound, error_types.VersionNotFound, error_types.DeprecatedEnv) as error:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Gymnasium has no environment '{env_id}' ({error}).{hint}") from None
    except error_types.Error:
        return  # a namespace registered by a package not imported here: gymnasium.make reports it


def make_gym_env(env_id: str, **kwargs: Any) -> Any:
    """``gymnasium.make(env_id, **kwargs)`` with errors that say what to install or which id was meant."""
    gymnasium = _gymnasium(env_id)
    error_types = gymnasium.error
    namespace = env_id.split("/")[0] if "/" in env_id else None
    try:
        return gymnasium.make(env_id, **kwargs)
    except error_types.DependencyNotInstalled as error:
        raise MissingPackageError(
            f"Gymnasium environment '{env_id}' needs a package that is not installed: {error}"
        ) from error
    except error_types.NamespaceNotFound as error:
        raise MissingPackageError(
            f"Gymnasium has no namespace '{namespace}' ({error}). Install the package that registers "
            f"'{env_id}' and import it before creating the environment."
        ) from error
    except (error_types.NameNotFound, error_types.VersionNotFound, error_types.DeprecatedEnv) as error:
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown Gymnasium environment '{env_id}': {error}.{hint}") from error
    except ModuleNotFoundError as error:
        package = (error.name or "the missing module").split(".")[0]
        raise MissingPackageError(
            f"Gymnasium environment '{env_id}' needs the package '{package}' ({error}). "
            f"Install it with: pip install {package}"
        ) from error


def make(task: str, config: Any) -> Env:
    """``gym_<EnvId>`` (e.g. ``gym_CartPole-v1``); ``config.env.gym`` entries go to ``gymnasium.make``."""
    kwargs = dict(getattr(config.env, "gym", None) or {})
    if not kwargs.get("render_mode"):
        kwargs.pop("render_mode", None)  # '': the environment's own default, no rendering
    seed = getattr(config, "seed", None)
    return FromGym(task, seed=None if seed is None else int(seed), **kwargs)
