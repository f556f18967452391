"""DMC adapter on real dm_control tasks: vectors, rendering, action scaling, presets."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("dm_control")

from dreamer_tf.config import load_config
from dreamer_tf.envs import make
from dreamer_tf.envs.dmc import DMC, configure_mujoco_gl, split_name
from tests.helpers.env_contract import rollout

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


@pytest.mark.parametrize("gpu", [True, False])
def test_mujoco_gl_is_chosen_automatically(monkeypatch, gpu):
    from dreamer_tf.envs import dmc

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)  # restored afterwards, so no test after sees egl
    monkeypatch.setattr(dmc, "isolate_osmesa", lambda: None)
    monkeypatch.setattr(dmc.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if gpu else None)
    monkeypatch.setattr(dmc.os.path, "exists", lambda path: False)
    assert configure_mujoco_gl() == ("egl" if gpu else "osmesa")
    assert os.environ["PYOPENGL_PLATFORM"] == ("egl" if gpu else "osmesa")
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    assert configure_mujoco_gl() == "glfw"  # the user's choice wins


def test_task_names_split_like_the_published_data():
    assert split_name("walker_walk") == ("walker", "walk")
    assert split_name("ball_in_cup_catch") == ("ball_in_cup", "catch")
    assert split_name("cup_catch") == ("ball_in_cup", "catch")
    assert split_name("cartpole_balance_sparse") == ("cartpole", "balance_sparse")


def test_proprio_full_episode():
    config = load_config(["dmc_proprio"])
    env = make("dmc_walker_walk", config)
    assert "image" not in env.obs_space and "log/image" not in env.obs_space
    assert env.obs_space["height"].shape == (1,)  # scalars are flattened to vectors
    assert env.obs_space["orientations"].shape == (14,)
    space = env.act_space["action"]
    assert space.dtype == np.float32 and (space.low == -1).all() and (space.high == 1).all()
    history = rollout(env, steps=1000)
    assert history[-1]["is_last"] and not history[-1]["is_terminal"]  # time limit, not terminal
    assert sum(bool(o["is_last"]) for o in history) == 1
    env.close()


def test_vision_renders_64x64_from_the_default_camera():
    config = load_config(["dmc_vision"])
    env = make("dmc_cartpole_swingup", config)
    assert set(env.obs_space) == {"image", "reward", "is_first", "is_last", "is_terminal"}
    history = rollout(env, steps=20)
    image = history[-1]["image"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.std() > 0
    env.close()
    quad = DMC("quadruped_walk", image=True, proprio=False)
    assert quad._camera == 2 and DMC("walker_walk")._camera == 0


def test_actions_are_rescaled_to_the_task_bounds():
    config = load_config(["dmc_proprio"])
    env = make("dmc_cartpole_balance", config)
    inner = env
    while not hasattr(inner, "_dmenv"):
        inner = inner.env
    spec = inner._dmenv.action_spec()
    seen = []
    original = inner._dmenv.step
    inner._dmenv.step = lambda action: (seen.append(np.array(action)), original(action))[1]
    env.step({"reset": True, "action": np.zeros(1, np.float32)})
    env.step({"reset": False, "action": np.ones(1, np.float32)})
    env.step({"reset": False, "action": -np.ones(1, np.float32) * 3})  # clipped to -1 first
    np.testing.assert_allclose(seen[0], spec.maximum)
    np.testing.assert_allclose(seen[1], spec.minimum)
    env.close()


def test_log_image_when_images_are_off():
    config = load_config(["dmc_proprio"]).update({"env.dmc.log_image": True})
    env = make("dmc_reacher_easy", config)
    obs = env.step({"reset": True, "action": np.zeros(2, np.float32)})
    assert obs["log/image"].shape == (64, 64, 3)
    env.close()


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="walker_walk"):
        DMC("walker_fly")


@pytest.mark.parametrize("task", ["cartpole_balance", "reacher_easy"])
def test_a_saved_state_continues_the_episode_bit_for_bit(task):
    # reacher moves its target in the model at every reset: the restore must redo that too.
    config = load_config(["dmc_proprio"])
    original = make(f"dmc_{task}", config.update({"seed": 1}))
    space = original.act_space["action"]
    rng = np.random.default_rng(0)

    def act(reset=False):
        return {"reset": reset, "action": rng.uniform(-1, 1, space.shape).astype(np.float32)}

    original.step(act(reset=True))
    for _ in range(137):
        original.step(act())
    state = original.state()
    restored = make(
        f"dmc_{task}", config.update({"seed": 7})
    )  # another seed: everything comes from the state
    restored.load_state(state)
    lasts = 0
    for _ in range(1000):  # past the end of this episode and into the next one
        action = act()
        want, got = original.step(action), restored.step(action)
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(want[key], got[key], err_msg=key)
        lasts += bool(want["is_last"])
    assert lasts == 1
    original.close()
    restored.close()


def test_a_state_saved_before_any_reset_is_none():
    env = make("dmc_cartpole_balance", load_config(["dmc_proprio"]))
    assert env.state() is None
    env.close()
