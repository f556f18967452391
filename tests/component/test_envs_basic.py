"""Dummy env, the Gymnasium adapter, check_env and BatchEnv."""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest

from dreamer_tf.envs.base import Env, standard_obs_spaces
from dreamer_tf.envs.check import EnvCheckError, EnvCheckWarning, check_env, check_gym_env
from dreamer_tf.envs.dummy import Dummy
from dreamer_tf.envs.parallel import BatchEnv
from dreamer_tf.spaces import Space

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent

# ------------------------------------------------------------------ dummy


@pytest.mark.parametrize("task", ["disc", "cont", "disc_match", "cont_match"])
def test_dummy_full_episode(task):
    env = Dummy(task, size=(16, 16), length=10)
    assert check_env(env, steps=40)["episodes"] >= 2
    obs = env.step({"reset": True, "action": env.act_space["action"].sample()})
    assert obs["image"].shape == (16, 16, 3) and obs["image"].dtype == np.uint8
    assert obs["vector"].shape == (7,) and obs["vector"].dtype == np.float32
    assert obs["is_first"] and obs["reward"] == 0
    rewards = []
    for _ in range(10):
        obs = env.step({"reset": False, "action": env.act_space["action"].sample()})
        rewards.append(obs["reward"])
    assert obs["is_last"] and obs["is_terminal"]
    if not task.endswith("match"):
        assert rewards == [1.0] * 10
    space = env.act_space["action"]
    if task.startswith("disc"):
        assert space.dtype == np.int32 and space.shape == () and space.classes == 5
    else:
        assert space.dtype == np.float32 and space.shape == (6,)
        assert (space.low == -1).all() and (space.high == 1).all()


def test_dummy_match_rewards_the_shown_target():
    env = Dummy("disc_match", size=(8, 8), length=5)
    obs = env.step({"reset": True, "action": 0})
    for _ in range(5):
        target = int(np.argmax(obs["vector"][:6]))
        obs = env.step({"reset": False, "action": np.int32(target)})
        assert obs["reward"] == 1.0
    env = Dummy("cont_match", size=(8, 8), length=5)
    obs = env.step({"reset": True, "action": np.zeros(6, np.float32)})
    obs = env.step({"reset": False, "action": obs["vector"][:6]})
    assert obs["reward"] == pytest.approx(1.0)


def test_dummy_cont_match_with_fewer_action_dims():
    env = Dummy("cont_match", size=(8, 8), length=5, dims=2)
    assert env.act_space["action"].shape == (2,)
    obs = env.step({"reset": True, "action": np.zeros(2, np.float32)})
    assert (obs["vector"][2:6] == 0).all() and (obs["vector"][:2] != 0).all()
    target = obs["vector"][:2]
    obs = env.step({"reset": False, "action": target})
    assert obs["reward"] == pytest.approx(1.0)
    obs = env.step({"reset": False, "action": -np.sign(obs["vector"][:2]).astype(np.float32)})
    assert obs["reward"] < 0.75  # the opposite corner
    with pytest.raises(ValueError, match="env.dummy.dims"):
        Dummy("cont_match", dims=7)


def test_dummy_through_registry():
    from dreamer_tf.config import load_config
    from dreamer_tf.envs import make

    config = load_config([]).update({"env.dummy.length": 7, "env.dummy.size": [12, 12]})
    env = make("dummy_cont", config)
    assert env.obs_space["image"].shape == (12, 12, 3)
    assert check_env(env, steps=20)["episodes"] >= 2
    env = make("dummy_cont_match", config.update({"env.dummy.image": False}))
    assert "image" not in env.obs_space and "image" not in env.step({"reset": True})
    assert check_env(env, steps=20)["episodes"] >= 2


# ------------------------------------------------------------------ gymnasium


def test_from_gym_cartpole():
    gymnasium = pytest.importorskip("gymnasium")
    from dreamer_tf.envs.gym import FromGym

    env = FromGym(gymnasium.make("CartPole-v1"), seed=0)
    assert env.obs_space["vector"] == Space(np.float32, (4,), *_box_bounds(env.env.observation_space))
    assert env.act_space["action"] == Space(np.int32, (), 0, 2)
    check_env(env, steps=200)
    obs = env.step({"reset": True, "action": np.int32(0)})
    assert obs["vector"].dtype == np.float32 and obs["is_first"]
    while not obs["is_last"]:
        obs = env.step({"reset": False, "action": np.int32(0)})  # always push left: falls over
    assert obs["is_terminal"] and obs["reward"] == 1.0


def test_from_gym_truncation_is_not_terminal():
    gymnasium = pytest.importorskip("gymnasium")
    from dreamer_tf.envs.gym import FromGym

    env = FromGym(gymnasium.make("Pendulum-v1", max_episode_steps=5), seed=0)
    obs = env.step({"reset": True, "action": np.zeros(1, np.float32)})
    for _ in range(5):
        obs = env.step({"reset": False, "action": np.zeros(1, np.float32)})
    assert obs["is_last"] and not obs["is_terminal"]
    obs = env.step({"reset": False, "action": np.zeros(1, np.float32)})
    assert obs["is_first"]  # a finished episode restarts whatever the reset flag says


def test_from_gym_rescales_continuous_actions():
    gymnasium = pytest.importorskip("gymnasium")
    from dreamer_tf.envs.gym import FromGym

    class Recorder(gymnasium.Wrapper):
        def step(self, action):
            self.last_action = action
            return super().step(action)

    inner = Recorder(gymnasium.make("Pendulum-v1"))  # torque in [-2, 2]
    env = FromGym(inner, seed=0)
    space = env.act_space["action"]
    assert space.dtype == np.float32 and (space.low == -1).all() and (space.high == 1).all()
    env.step({"reset": True, "action": np.zeros(1, np.float32)})
    for agent_value, torque in [(0.5, 1.0), (-1.0, -2.0), (0.0, 0.0), (3.0, 2.0)]:
        env.step({"reset": False, "action": np.array([agent_value], np.float32)})
        np.testing.assert_allclose(inner.last_action, [torque], atol=1e-6)
        assert inner.last_action.dtype == np.float32
    check_gym_env(gymnasium.make("Pendulum-v1"), steps=50)


def test_from_gym_dict_and_discrete_spaces():
    gymnasium = pytest.importorskip("gymnasium")
    from gymnasium import spaces

    from dreamer_tf.envs.gym import FromGym

    class Toy(gymnasium.Env):
        observation_space = spaces.Dict(
            {
                "pixels": spaces.Box(0, 255, (3, 16, 16), np.uint8),  # channel-first
                "state": spaces.Dict(
                    {"pos": spaces.Box(-1.0, 1.0, (2,), np.float64), "room": spaces.Discrete(4)}
                ),
            }
        )
        action_space = spaces.Dict({"move": spaces.Discrete(3, start=-1), "buttons": spaces.MultiBinary(2)})

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self._obs(), {}

        def step(self, action):
            assert action["move"] in (-1, 0, 1) and action["buttons"].shape == (2,), action
            self.t += 1
            return self._obs(), 1.0, False, self.t >= 3, {}

        def _obs(self):
            pixels = np.full((3, 16, 16), self.t, np.uint8)
            return {"pixels": pixels, "state": {"pos": np.zeros(2), "room": self.t % 4}}

    env = FromGym(Toy())
    assert env.obs_space["pixels"] == Space(np.uint8, (16, 16, 3))
    assert env.obs_space["state/pos"].dtype == np.float32
    assert env.obs_space["state/room"] == Space(np.float32, (4,), 0.0, 1.0)  # one-hot
    assert set(env.act_space) == {"reset", "move", "buttons/0", "buttons/1"}
    assert env.act_space["move"].classes == 3
    check_env(env, steps=20)
    obs = env.step({"reset": True, "move": 0, "buttons/0": 1, "buttons/1": 0})
    obs = env.step({"reset": False, "move": 0, "buttons/0": 1, "buttons/1": 0})
    np.testing.assert_array_equal(obs["state/room"], [0, 1, 0, 0])


def test_gym_registry_task_and_errors():
    pytest.importorskip("gymnasium")
    from dreamer_tf.config import load_config
    from dreamer_tf.envs import make
    from dreamer_tf.envs.gym import make_gym_env
    from dreamer_tf.envs.wrappers import MissingPackageError

    env = make("gym_CartPole-v1", load_config([]))
    check_env(env, steps=30)
    with pytest.raises(ValueError, match="CartPole"):
        make_gym_env("CartPol-v1")
    with pytest.raises(MissingPackageError, match="no namespace 'NoSuchNamespace'"):
        make_gym_env("NoSuchNamespace/Thing-v0")
    if importlib.util.find_spec("ale_py") is None:
        with pytest.raises(MissingPackageError, match="pip install ale-py"):
            make_gym_env("ALE/Pong-v5")
    else:
        env = make("gym_ALE/Pong-v5", load_config([]))  # the namespace is registered on demand
        assert env.obs_space["image"].shape == (210, 160, 3) and env.act_space["action"].classes == 6
        env.close()


def _box_bounds(space):
    return np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)


# ------------------------------------------------------------------ check_env


class Configurable(Env):
    """A small env whose contract violations are chosen by the test."""

    def __init__(self, **bugs) -> None:
        self.bugs = bugs
        self.t = 0
        self.done = True

    @property
    def obs_space(self):
        spaces = {
            "vector": Space(np.float32, (3,)),
            "image": Space(np.uint8, (8, 8, 3)),
            **standard_obs_spaces(),
        }
        if self.bugs.get("no_is_terminal"):
            del spaces["is_terminal"]
        if self.bugs.get("float_image_space"):
            spaces["image"] = Space(np.float32, (8, 8, 3))
        return spaces

    @property
    def act_space(self):
        spaces = {"reset": Space(bool), "action": Space(np.int32, (), 0, 3)}
        if self.bugs.get("no_reset"):
            del spaces["reset"]
        if self.bugs.get("unbounded_action"):
            spaces["action"] = Space(np.float32, (2,), -5, 5)
        return spaces

    def step(self, action):
        if action["reset"] or self.done:
            self.t, self.done = 0, False
        else:
            self.t += 1
            self.done = self.t >= 4
        obs = {
            "vector": np.zeros(3, np.float32),
            "image": np.zeros((8, 8, 3), np.uint8),
            "reward": np.float32(0.0 if self.t == 0 else 1.0),
            "is_first": np.asarray(self.t == 0),
            "is_last": np.asarray(self.done),
            "is_terminal": np.asarray(self.done),
        }
        bugs = self.bugs
        if bugs.get("vector_shape"):
            obs["vector"] = np.zeros(4, np.float32)
        if bugs.get("vector_dtype"):
            obs["vector"] = np.zeros(3, np.float64)
        if bugs.get("nan_reward") and self.t == 2:
            obs["reward"] = np.float32("nan")
        if bugs.get("terminal_without_last") and self.t == 2:
            obs["is_terminal"] = np.asarray(True)
        if bugs.get("no_first"):
            obs["is_first"] = np.asarray(False)
        if bugs.get("first_reward") and self.t == 0:
            obs["reward"] = np.float32(1.0)
        if bugs.get("missing_vector"):
            del obs["vector"]
        if bugs.get("extra_key"):
            obs["secret"] = np.float32(1)
        if bugs.get("raises") and self.t == 2:
            raise RuntimeError("the simulator exploded")
        return obs


def test_check_env_accepts_a_good_env():
    assert check_env(Configurable(), steps=30)["episodes"] >= 5


@pytest.mark.parametrize(
    "bug,pattern",
    [
        ("no_is_terminal", "is_terminal"),
        ("no_reset", "'reset'"),
        ("float_image_space", "image.*uint8"),
        ("unbounded_action", r"action.*\[-1, 1\]"),
        ("vector_shape", r"'vector' has shape \(4,\).*\(3,\)"),
        ("vector_dtype", "'vector' has dtype float64.*float32"),
        ("nan_reward", "reward is not finite"),
        ("terminal_without_last", "is_terminal=True but is_last=False"),
        ("no_first", "is_first"),
        ("missing_vector", "vector"),
        ("extra_key", "secret"),
        ("raises", "the simulator exploded"),
    ],
)
def test_check_env_names_the_problem(bug, pattern):
    with pytest.raises(EnvCheckError, match=pattern):
        check_env(Configurable(**{bug: True}), steps=30)


def test_check_env_warns_about_reward_on_first_step():
    with pytest.warns(EnvCheckWarning, match="first step"):
        check_env(Configurable(first_reward=True), steps=10)


def test_check_env_rejects_non_env():
    with pytest.raises(EnvCheckError, match="FromGym"):
        check_env(object())


# ------------------------------------------------------------------ BatchEnv


def make_dummy(task: str = "disc", length: int = 6) -> Dummy:
    return Dummy(task, size=(8, 8), length=length)


def make_broken() -> Configurable:
    return Configurable(raises=True)


def make_bad_shape() -> Configurable:
    return Configurable(vector_shape=True)


def drive(envs_step, count: int, steps: int, act_space) -> list[dict]:
    rng = np.random.default_rng(0)
    history = []
    for t in range(steps):
        action = {
            "reset": np.array([t == 0 or (t == 4 and i == 1) for i in range(count)]),
            "action": np.stack([act_space["action"].sample(rng) for _ in range(count)]),
        }
        history.append(envs_step(action))
    return history


@pytest.mark.parametrize("parallel", ["none", "process"])
def test_batch_env_matches_sequential_stepping(parallel):
    fns = [functools.partial(make_dummy, "cont", length) for length in (3, 5, 6)]
    singles = [fn() for fn in fns]

    def sequential(action):
        results = [env.step({k: v[i] for k, v in action.items()}) for i, env in enumerate(singles)]
        return {k: np.stack([r[k] for r in results]) for k in results[0]}

    expected = drive(sequential, 3, 14, singles[0].act_space)
    with BatchEnv(fns, parallel=parallel, timeout=60) as envs:
        assert len(envs) == 3 and envs.act_space == singles[0].act_space
        assert envs.obs_space == singles[0].obs_space
        actual = drive(envs.step, 3, 14, envs.act_space)
    for want, got in zip(expected, actual):
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(want[key], got[key], err_msg=key)
            assert got[key].dtype == envs.obs_space[key].dtype and got[key].shape[0] == 3


@pytest.mark.parametrize("parallel", ["none", "process"])
def test_batch_env_saves_and_restores_every_environment(parallel):
    fns = [functools.partial(make_dummy, "cont_match", length) for length in (3, 5, 6)]
    with BatchEnv(fns, parallel=parallel, timeout=60) as envs, BatchEnv(fns, parallel=parallel) as copies:
        history = drive(envs.step, 3, 4, envs.act_space)
        assert not history[-1]["is_first"].any()
        copies.load_state(envs.state())
        rng = np.random.default_rng(1)
        for _ in range(8):
            action = {
                "reset": np.zeros(3, bool),
                "action": np.stack([envs.act_space["action"].sample(rng) for _ in range(3)]),
            }
            want, got = envs.step(action), copies.step(action)
            for key in want:
                np.testing.assert_array_equal(want[key], got[key], err_msg=key)
        # A state that does not fit is named, and the batch still steps (a reset starts afresh).
        with pytest.raises(ValueError, match=r"3 of 3 environments could not restore their state"):
            copies.load_state([{"count": 1}] * 3)
        with pytest.raises(ValueError, match="2 saved environment states for 3"):
            copies.load_state(envs.state()[:2])
        obs = copies.step({"reset": np.ones(3, bool), "action": np.zeros((3, 6), np.float32)})
        assert obs["is_first"].all()


class Stateless(Dummy):
    """The dummy env without a saved state (like an adapter that does not implement one)."""

    def state(self) -> None:
        return None


def test_batch_env_state_is_none_when_an_environment_cannot_save():
    fns = [functools.partial(Stateless, "disc", (8, 8), 4), functools.partial(make_dummy, "disc", 4)]
    with BatchEnv(fns, parallel="none") as envs:
        envs.step({"reset": np.ones(2, bool), "action": np.zeros(2, np.int32)})
        assert envs.state() is None
        assert envs._envs[1].state() is not None


@pytest.mark.parametrize("parallel", ["none", "process"])
def test_batch_env_worker_exception_propagates(parallel):
    envs = BatchEnv([Configurable, make_broken], parallel=parallel, timeout=60)
    step = {"reset": np.array([True, True]), "action": np.zeros(2, np.int32)}
    envs.step(step)
    step["reset"] = np.array([False, False])
    envs.step(step)
    with pytest.raises(RuntimeError, match="the simulator exploded") as info:
        envs.step(step)
    if parallel == "process":
        assert "step" in str(info.value.__cause__)  # the worker's traceback
    envs.close()


@pytest.mark.parametrize("parallel", ["none", "process"])
def test_batch_env_bad_observation_names_the_key(parallel):
    with (
        BatchEnv([make_bad_shape], parallel=parallel, timeout=60) as envs,
        pytest.raises(ValueError, match=r"'vector' with shape \(4,\)"),
    ):
        envs.step({"reset": np.array([True]), "action": np.zeros(1, np.int32)})


def test_batch_env_rejects_mismatched_spaces_and_lambdas():
    with pytest.raises(ValueError, match=r"different obs_space.*'vector'.*\(3,\).*\(7,\)"):
        BatchEnv([make_dummy, make_bad_shape], parallel="none")
    with pytest.raises(TypeError, match="functools.partial"):
        BatchEnv([lambda: make_dummy()], parallel="process")
    with pytest.raises(ValueError, match="parallel"):
        BatchEnv([make_dummy], parallel="threads")


def slow_env(delay: float) -> Dummy:
    import time

    time.sleep(delay)
    return make_dummy()


def test_batch_env_timeout_is_clear():
    with pytest.raises(TimeoutError, match="worker 0 did not create the environment within 0.5 seconds"):
        BatchEnv([functools.partial(slow_env, 30.0)], parallel="process", timeout=0.5)
