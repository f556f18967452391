"""Atari and Atari 100k adapters on real ALE games: contract and the paper's preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

ale_py = pytest.importorskip("ale_py")

from dreamer_tf.config import load_config
from dreamer_tf.envs import make
from dreamer_tf.envs.atari import LUMA, Atari, preprocess
from tests.helpers.env_contract import rollout

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


@pytest.fixture(scope="module")
def config():
    return load_config()


def raw_atari(game: str = "breakout", **kwargs) -> Atari:
    settings = {"size": (96, 96), "gray": True, "noops": 0, "sticky": False, "actions": "all", "seed": 0}
    settings.update(kwargs)
    return Atari(game, **settings)


def unwrap(env) -> Atari:
    while not isinstance(env, Atari):
        env = env.env
    return env


def screen(env: Atari) -> np.ndarray:
    return env.ale.getScreenRGB().copy()


@pytest.mark.parametrize("task", ["atari_pong", "atari100k_breakout"])
def test_random_rollout_keeps_the_contract(config, task):
    env = make(task, config)
    history = rollout(env, steps=1500, episodes=2)
    assert sum(bool(o["is_last"]) for o in history) >= 1, "no episode ended in 1500 steps"
    last = [o for o in history if o["is_last"]]
    assert all(o["is_terminal"] for o in last), "game over must be terminal"
    env.close()


def test_spaces_follow_the_presets(config):
    atari = make("atari_pong", config)
    small = make("atari100k_pong", config)
    assert atari.obs_space["image"].shape == (96, 96, 1)
    assert small.obs_space["image"].shape == (64, 64, 3)
    assert atari.act_space["action"].classes == 18
    assert small.act_space["action"].classes == 6  # Pong's minimal action set
    assert atari.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert small.ale.getFloat("repeat_action_probability") == 0.0


def test_needed_actions_are_the_minimal_set():
    env = raw_atari("breakout", actions="needed")
    assert env.actionset == list(env.ale.getMinimalActionSet())
    assert len(env.actionset) == 4
    assert len(raw_atari("breakout", actions="all").actionset) == 18


def test_step_pools_the_last_two_frames_and_repeats_four():
    env = raw_atari("breakout", gray=False, size=(210, 160))
    env.step({"reset": True, "action": 0})
    for _ in range(20):
        env.step({"reset": False, "action": 1})  # FIRE launches the ball: frames change
    twin = raw_atari("breakout", gray=False, size=(210, 160))
    frames = []
    state = env.ale.cloneState()
    twin.ale.restoreState(state)
    for _ in range(4):
        twin.ale.act(env.actionset[3])
        frames.append(screen(twin))
    start = env.ale.getEpisodeFrameNumber()
    obs = env.step({"reset": False, "action": 3})
    assert env.ale.getEpisodeFrameNumber() - start == 4
    expected = np.maximum(frames[-1], frames[-2])
    assert not np.array_equal(frames[-1], frames[-2]), "pick a state whose last two frames differ"
    np.testing.assert_array_equal(obs["image"], preprocess(expected, (210, 160), gray=False))
    np.testing.assert_array_equal(obs["image"], expected)  # resizing to the native size is exact


def test_reset_pools_only_the_new_episodes_frame():
    # The official code once pooled the first frame of an episode with a frame of the previous
    # one; after a reset the observation must show the current screen only.
    env = raw_atari("breakout", gray=False, size=(210, 160), noops=0)
    env.step({"reset": True, "action": 0})
    for _ in range(30):
        env.step({"reset": False, "action": int(np.random.default_rng(0).integers(18))})
    stale = [frame.copy() for frame in env.frames]
    obs = env.step({"reset": True, "action": 0})
    assert obs["is_first"]
    np.testing.assert_array_equal(obs["image"], screen(env))
    for frame in env.frames:
        np.testing.assert_array_equal(frame, screen(env))
    assert any(not np.array_equal(frame, screen(env)) for frame in stale), "stale frames should differ"


def test_gray_conversion_and_resize():
    env = raw_atari("breakout", gray=True, size=(96, 96))
    obs = env.step({"reset": True, "action": 0})
    rgb = np.asarray(preprocess(screen(env), (96, 96), gray=False))
    assert rgb.shape == (96, 96, 3)
    luma = (rgb.astype(np.float64) @ LUMA).astype(np.uint8)[:, :, None]
    np.testing.assert_array_equal(obs["image"], luma)
    assert obs["image"].shape == (96, 96, 1) and obs["image"].dtype == np.uint8
    # Pure red and pure green must not map to the same gray value (unequal weights).
    red, green = np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)
    red[..., 0], green[..., 1] = 255, 255
    assert preprocess(red, (2, 2), True)[0, 0, 0] != preprocess(green, (2, 2), True)[0, 0, 0]
    wide = raw_atari("breakout", gray=False, size=(64, 48))
    assert wide.step({"reset": True, "action": 0})["image"].shape == (64, 48, 3)


def test_noop_starts_are_uniform_up_to_30():
    env = raw_atari("breakout", noops=30, seed=1)
    counts = []
    for _ in range(40):
        env.step({"reset": True, "action": 0})
        counts.append(env.ale.getEpisodeFrameNumber())
    assert min(counts) >= 0 and max(counts) <= 30
    assert len(set(counts)) > 10, counts
    none = raw_atari("breakout", noops=0)
    none.step({"reset": True, "action": 0})
    assert none.ale.getEpisodeFrameNumber() == 0


def _sticky_rate(env: Atari, trials: int) -> float:
    """How often an action is replaced by the previous one, against a deterministic twin."""
    twin = raw_atari("breakout", sticky=False)
    noop, left, right = (ale_py.Action.NOOP, ale_py.Action.LEFT, ale_py.Action.RIGHT)
    env.ale.reset_game()
    informative = repeated = 0
    for trial in range(trials):
        for _ in range(8):  # make NOOP the previous action (a sticky RIGHT lasts ~1.3 frames)
            env.ale.act(noop)
        state = env.ale.cloneState()
        move = right if trial % 2 else left
        twin.ale.restoreState(state)
        twin.ale.act(noop)
        after_noop = twin.ale.getRAM().copy()
        twin.ale.restoreState(state)
        twin.ale.act(move)
        after_move = twin.ale.getRAM().copy()
        env.ale.act(move)
        if np.array_equal(after_noop, after_move):
            continue
        informative += 1
        repeated += np.array_equal(env.ale.getRAM(), after_noop)
        if env.ale.game_over():
            env.ale.reset_game()
    assert informative > trials // 2, informative
    return repeated / informative


def test_sticky_actions_repeat_a_quarter_of_the_time(config):
    sticky = make("atari_breakout", config.update({"env.atari.size": [84, 84]}))
    rate = _sticky_rate(unwrap(sticky), 1200)
    assert 0.2 < rate < 0.3, rate
    plain = make("atari100k_breakout", config)
    assert _sticky_rate(unwrap(plain), 200) == 0.0


def test_lives_modes():
    env = raw_atari("breakout", lives="reset", noops=0)
    env.step({"reset": True, "action": 0})
    lives = env.ale.lives()
    rng = np.random.default_rng(0)
    for _ in range(2000):
        obs = env.step({"reset": False, "action": int(rng.integers(18))})
        if obs["is_last"]:
            break
    assert obs["is_last"] and obs["is_terminal"]
    assert 0 < env.ale.lives() < lives, "episode should end at the first life lost"


def test_time_limit_is_a_truncation():
    env = raw_atari("pong", length=40)
    env.step({"reset": True, "action": 0})
    steps = 0
    while True:
        obs = env.step({"reset": False, "action": 0})
        steps += 1
        if obs["is_last"]:
            break
    assert steps == 10 and not obs["is_terminal"]


def test_unknown_game_names_the_roms():
    with pytest.raises(Exception, match="no ROM|not|pong"):
        raw_atari("not_a_game")
