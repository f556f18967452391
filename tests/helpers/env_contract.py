"""Shared checks of the environment contract for the domain adapter tests.

``rollout(env, steps)`` drives ``env`` with random actions and checks every observation
against the declared spaces and the episode flags; it returns the observations.
``dreamer_tf.envs.check.check_env`` runs too when that module exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dreamer_tf.envs.base import RESERVED_OBS_KEYS


def check_obs(env: Any, obs: dict[str, np.ndarray]) -> None:
    assert set(obs) == set(env.obs_space), (sorted(obs), sorted(env.obs_space))
    for key, space in env.obs_space.items():
        value = np.asarray(obs[key])
        space.check(value, key)
        assert value.dtype == space.dtype, (key, value.dtype, space.dtype)
        if space.is_image:
            assert value.dtype == np.uint8, key
        elif np.issubdtype(space.dtype, np.floating):
            assert value.dtype == np.float32, (key, value.dtype)
            assert np.isfinite(value).all(), (key, value)
    for key in RESERVED_OBS_KEYS:
        assert key in obs, key
    assert np.isfinite(obs["reward"]), obs["reward"]


def random_action(env: Any, rng: np.random.Generator) -> dict[str, Any]:
    action = {k: space.sample(rng) for k, space in env.act_space.items() if k != "reset"}
    for key, value in action.items():
        env.act_space[key].check(value, key)
    return {"reset": False, **action}


def rollout(env: Any, steps: int, seed: int = 0, episodes: int | None = None) -> list[dict[str, np.ndarray]]:
    """Random actions for ``steps`` steps (or until ``episodes`` episodes finished); checks each step."""
    assert "reset" in env.act_space and "action" in env.act_space, sorted(env.act_space)
    assert not set(env.obs_space) & set(env.act_space), (sorted(env.obs_space), sorted(env.act_space))
    rng = np.random.default_rng(seed)
    _run_check_env(env)
    obs = env.step({**random_action(env, rng), "reset": True})
    check_obs(env, obs)
    assert obs["is_first"] and not obs["is_last"] and not obs["is_terminal"] and obs["reward"] == 0
    history = [obs]
    finished = 0
    for _ in range(steps):
        previous = obs
        obs = env.step(random_action(env, rng))
        check_obs(env, obs)
        history.append(obs)
        if previous["is_last"]:
            # After is_last the next step starts a new episode whatever the reset flag says.
            assert obs["is_first"] and obs["reward"] == 0, obs
        else:
            assert not obs["is_first"], "is_first in the middle of an episode"
        if obs["is_terminal"]:
            assert obs["is_last"], "is_terminal without is_last"
        if obs["is_last"]:
            finished += 1
            if episodes and finished >= episodes:
                break
    return history


def _run_check_env(env: Any) -> None:
    try:
        from dreamer_tf.envs.check import check_env
    except ImportError:
        return
    check_env(env)
