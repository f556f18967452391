"""Check that an environment follows the contract of ``dreamer_tf.envs.base`` before training on it.

    from dreamer_tf.envs.check import check_env, check_gym_env
    check_env(MyEnv())                               # raises EnvCheckError naming the problem
    check_gym_env(gymnasium.make("CartPole-v1"))     # the same, through FromGym

The check steps the environment with random actions (including one reset in the middle of an
episode) and compares every observation with the declared spaces and the episode flags. Each
error names the key and says what was expected and what came instead.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dreamer_tf.envs.base import RESERVED_OBS_KEYS
from dreamer_tf.spaces import Space


class EnvCheckError(AssertionError):
    """The environment breaks the contract; the message names the key and the fix."""


class EnvCheckWarning(UserWarning):
    """Something unusual that does not break training (e.g. a reward on the first step)."""


def check_env(env: Any, steps: int = 100, seed: int = 0) -> dict[str, int]:
    """Step ``env`` ``steps`` times with random actions and raise ``EnvCheckError`` on any violation.

    Returns a summary ``{"steps": ..., "episodes": ...}`` (finished episodes). The environment is
    left in the middle of an episode; close it yourself.

        summary = check_env(Dummy("disc"), steps=200)    # {"steps": 200, "episodes": 1}
    """
    obs_space, act_space = _check_spaces(env)
    rng = np.random.default_rng(seed)
    reset_at = max(2, steps // 2)  # one reset request in the middle of an episode

    obs = _step(env, act_space, rng, reset=True, index=0)
    _check_obs(obs, obs_space, 0)
    if not obs["is_first"]:
        raise EnvCheckError("The step after a reset must have is_first=True, got is_first=False.")
    if obs["is_last"]:
        raise EnvCheckError(
            "The first step of an episode has is_last=True: episodes must be at least 2 steps."
        )
    if obs["reward"] != 0:
        warnings.warn(
            f"The first step of an episode has reward {float(obs['reward'])}; the contract expects 0 "
            "(the reward of a first step is never used).",
            EnvCheckWarning,
            stacklevel=2,
        )
    episodes, length = 0, 0
    for index in range(1, steps + 1):
        reset = index == reset_at and not obs["is_last"] and length > 0
        previous = obs
        obs = _step(env, act_space, rng, reset=reset, index=index)
        _check_obs(obs, obs_space, index)
        length += 1
        if previous["is_last"] or reset:
            why = "after a step with is_last=True" if previous["is_last"] else "after a reset request"
            if not obs["is_first"]:
                raise EnvCheckError(
                    f"Step {index}: is_first must be True {why} (the episode restarts), got False."
                )
            if obs["is_last"]:
                raise EnvCheckError(f"Step {index}: a new episode's first step has is_last=True.")
            length = 0
        elif obs["is_first"]:
            raise EnvCheckError(
                f"Step {index}: is_first=True in the middle of an episode (previous step had is_last=False and "
                "no reset was requested). End the previous episode with is_last=True first."
            )
        if obs["is_terminal"] and not obs["is_last"]:
            raise EnvCheckError(
                f"Step {index}: is_terminal=True but is_last=False. A terminal step also ends the episode: "
                "set is_last=True whenever is_terminal=True."
            )
        if obs["is_last"]:
            episodes += 1
    return {"steps": steps, "episodes": episodes}


def check_gym_env(gym_env: Any, steps: int = 100, seed: int = 0, **from_gym_kwargs: Any) -> dict[str, int]:
    """``check_env(FromGym(gym_env))``: checks that a Gymnasium env works through the adapter.

    check_gym_env(gymnasium.make("Pendulum-v1"))
    """
    from dreamer_tf.envs.gym import FromGym

    env = FromGym(gym_env, seed=seed, **from_gym_kwargs)
    return check_env(env, steps=steps, seed=seed)


def _check_spaces(env: Any) -> tuple[dict[str, Space], dict[str, Space]]:
    for name in ("obs_space", "act_space", "step"):
        if not hasattr(env, name):
            raise EnvCheckError(
                f"{type(env).__name__} has no '{name}': environments implement dreamer_tf.envs.base.Env. "
                "For a Gymnasium env use dreamer_tf.envs.gym.FromGym(env) (or check_gym_env)."
            )
    obs_space, act_space = env.obs_space, env.act_space
    for label, spaces in (("obs_space", obs_space), ("act_space", act_space)):
        if not isinstance(spaces, dict):
            raise EnvCheckError(f"{label} must be a dict of key -> Space, got {type(spaces).__name__}.")
        for key, space in spaces.items():
            if not isinstance(space, Space):
                raise EnvCheckError(
                    f"{label}['{key}'] must be a dreamer_tf.spaces.Space, got {type(space).__name__} ({space!r})."
                )
    expected = {"reward": np.float32, "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_}
    for key in RESERVED_OBS_KEYS:
        if key not in obs_space:
            raise EnvCheckError(
                f"obs_space lacks the reserved key '{key}' (it has {sorted(obs_space)}). Every environment "
                "reports reward, is_first, is_last and is_terminal; see dreamer_tf.envs.base.standard_obs_spaces."
            )
        space = obs_space[key]
        if space.shape != () or space.dtype != expected[key]:
            raise EnvCheckError(
                f"obs_space['{key}'] must be a scalar {np.dtype(expected[key]).name}, got {space}."
            )
    if "reset" not in act_space:
        raise EnvCheckError(
            f"act_space lacks the key 'reset' (it has {sorted(act_space)}); add 'reset': Space(bool). "
            "Environments are reset through step({'reset': True, ...})."
        )
    if act_space["reset"].dtype != np.bool_ or act_space["reset"].shape != ():
        raise EnvCheckError(f"act_space['reset'] must be Space(bool), got {act_space['reset']}.")
    if len(act_space) < 2:
        raise EnvCheckError("act_space has no action key besides 'reset'; add one such as 'action'.")
    overlap = set(obs_space) & set(act_space)
    if overlap:
        raise EnvCheckError(f"Keys {sorted(overlap)} are both observations and actions; rename one of them.")
    for key, space in obs_space.items():
        if key in RESERVED_OBS_KEYS or key.startswith("log/"):
            continue
        if len(space.shape) == 3 and space.dtype != np.uint8:
            raise EnvCheckError(
                f"obs_space['{key}'] has rank 3 but dtype {space.dtype}: images must be uint8 (H, W, C) in "
                "0..255; other observations must have rank <= 2."
            )
        if len(space.shape) > 3:
            raise EnvCheckError(
                f"obs_space['{key}'] has rank {len(space.shape)}: observations have rank <= 3."
            )
        if space.is_image and space.shape[0] in (1, 3, 4) and space.shape[2] not in (1, 3, 4):
            raise EnvCheckError(
                f"obs_space['{key}'] has shape {space.shape}, which looks channel-first (C, H, W); images "
                "must be (H, W, C): transpose them."
            )
    for key, space in act_space.items():
        if key == "reset":
            continue
        if space.discrete:
            try:
                classes = space.classes
            except AssertionError as error:
                raise EnvCheckError(f"act_space['{key}']: {error}") from None
            if classes < 2 or np.any(space.low != 0):
                raise EnvCheckError(
                    f"act_space['{key}'] must count classes from 0 with at least 2 classes, got {space}."
                )
        elif not (np.all(space.low == -1) and np.all(space.high == 1)):
            raise EnvCheckError(
                f"Continuous act_space['{key}'] must be bounded to [-1, 1] (the agent's range), got {space}. "
                "Wrap the environment with dreamer_tf.envs.wrappers.standardize (it rescales actions)."
            )
    return obs_space, act_space


def _step(env: Any, act_space: dict[str, Space], rng: np.random.Generator, reset: bool, index: int) -> dict:
    action = {key: space.sample(rng) for key, space in act_space.items() if key != "reset"}
    action["reset"] = np.asarray(reset)
    try:
        obs = env.step(action)
    except Exception as error:
        raise EnvCheckError(
            f"Step {index}: env.step raised {type(error).__name__}: {error} for the valid action {action}."
        ) from error
    if not isinstance(obs, dict):
        raise EnvCheckError(
            f"Step {index}: env.step must return a dict of observations, got {type(obs).__name__}."
        )
    return obs


def _check_obs(obs: dict[str, Any], obs_space: dict[str, Space], index: int) -> None:
    missing = sorted(set(obs_space) - set(obs))
    if missing:
        raise EnvCheckError(f"Step {index}: observation lacks the declared key(s) {missing}.")
    extra = sorted(set(obs) - set(obs_space))
    if extra:
        raise EnvCheckError(
            f"Step {index}: observation has key(s) {extra} that obs_space does not declare; declare them."
        )
    for key, space in obs_space.items():
        value = obs[key]
        array = np.asarray(value)
        if array.shape != space.shape:
            raise EnvCheckError(
                f"Step {index}: observation '{key}' has shape {array.shape} but obs_space declares "
                f"{space.shape} ({space})."
            )
        if array.dtype != space.dtype:
            raise EnvCheckError(
                f"Step {index}: observation '{key}' has dtype {array.dtype} but obs_space declares "
                f"{space.dtype} ({space}); convert it, e.g. np.asarray(value, np.{space.dtype.name})."
            )
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            what = "reward" if key == "reward" else f"observation '{key}'"
            raise EnvCheckError(f"Step {index}: {what} is not finite: {array if array.size < 10 else '...'}.")
        if space.discrete and space.dtype != np.bool_ and array.size:
            # Default bounds of an integer space are the dtype's range: nothing to check then.
            bounded = np.any(space.high != np.iinfo(space.dtype).max)
            if bounded and (np.any(array < space.low) or np.any(array >= space.high)):
                raise EnvCheckError(
                    f"Step {index}: observation '{key}' has values outside its space {space}: "
                    f"min {array.min()}, max {array.max()} (high is exclusive for discrete spaces)."
                )
