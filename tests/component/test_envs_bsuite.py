"""BSuite adapter: all ids, real episodes, and bsuite's own CSV logging for its analysis."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bsuite")

from dreamer_tf.config import load_config
from dreamer_tf.envs import make
from dreamer_tf.envs.bsuite import EXPERIMENTS, BSuite, all_ids, results_dir
from tests.helpers.env_contract import rollout

# The environments, replay, checkpoints, the loop and the CLI do not depend on the Keras backend.
pytestmark = pytest.mark.backend_independent


def test_all_468_ids_and_the_static_table_agree():
    from bsuite import sweep

    ids = all_ids()
    assert len(ids) == 468 and ids == list(sweep.SWEEP)
    counts = {name: sum(1 for i in ids if i.split("/")[0] == name) for name in EXPERIMENTS}
    assert counts == EXPERIMENTS and len(EXPERIMENTS) == 23


@pytest.mark.parametrize(
    "task", ["bsuite_catch/0", "bsuite_cartpole/0", "bsuite_deep_sea/3", "bsuite_memory_len/0"]
)
def test_real_episodes_are_logged_to_csv(tmp_path, task):
    config = load_config(["bsuite"]).update({"env.bsuite.logdir": str(tmp_path)})
    env = make(task, config)
    for space in env.obs_space.values():
        assert len(space.shape) <= 1, env.obs_space  # 2-D boards are flattened
    history = rollout(env, steps=1000)
    episodes = sum(bool(o["is_last"]) for o in history)
    assert episodes >= 1
    env.close()
    from bsuite.logging import csv_load

    frame, _ = csv_load.load_bsuite(str(tmp_path))
    assert set(frame.bsuite_id) == {task.split("_", 1)[1]}
    assert frame.episode.max() >= 1 and np.isfinite(frame.total_return).all()


def test_catch_episode_terminal_flags(tmp_path):
    env = BSuite("catch", str(tmp_path))  # a bare experiment means configuration 0
    assert env.bsuite_id == "catch/0" and env.max_episodes == 10000
    obs = env.step({"reset": True, "action": 0})
    length = 0
    while not obs["is_last"]:
        obs = env.step({"reset": False, "action": 1})
        length += 1
    assert length == 9 and obs["is_terminal"] and obs["reward"] in (-1.0, 1.0)
    assert env.num_episodes == 1 and not env.finished


def test_logdir_defaults_and_bad_ids(tmp_path):
    config = load_config(["bsuite"]).update({"logdir": str(tmp_path)})
    assert results_dir(config) == str(tmp_path / "bsuite")
    with pytest.raises(ValueError, match="0..19"):
        BSuite("catch/99", None)


def play(env: BSuite, episodes: int) -> None:
    for _ in range(episodes):
        obs = env.step({"reset": True, "action": 0})
        while not obs["is_last"]:
            obs = env.step({"reset": False, "action": 1})


def test_resumed_run_continues_the_csv(tmp_path):
    from bsuite.logging import csv_load

    env = BSuite("catch/0", str(tmp_path))
    play(env, 10)
    regret = _find_raw(env)._total_regret
    env.close()
    frame, _ = csv_load.load_bsuite(str(tmp_path))
    assert frame.episode.max() == 10
    resumed = BSuite("catch/0", str(tmp_path))  # as a resumed training run does
    assert resumed.num_episodes == 10 and _find_raw(resumed)._total_regret == regret
    play(resumed, 10)
    resumed.close()
    frame, _ = csv_load.load_bsuite(str(tmp_path))
    assert frame.episode.max() == 20 and frame.steps.max() == 20 * 9
    assert (frame.episode.diff().dropna() > 0).all()  # one stream, no restart from episode 1
    fresh = BSuite("catch/0", str(tmp_path), overwrite=True)
    assert fresh.num_episodes == 0
    fresh.close()


def test_only_one_environment_records_each_id(tmp_path):
    first, second = BSuite("catch/0", str(tmp_path)), BSuite("catch/0", str(tmp_path))
    assert first.recorder is not None and second.recorder is None
    play(first, 2)
    play(second, 5)
    from bsuite.logging import csv_load

    frame, _ = csv_load.load_bsuite(str(tmp_path))
    assert frame.episode.max() == 2
    first.close()
    second.close()
    (tmp_path / "bsuite_id_-_catch-0.csv.lock").write_text("999999999")  # left by a killed process
    assert BSuite("catch/0", str(tmp_path)).recorder is not None


def _find_raw(env: BSuite):
    from dreamer_tf.envs.bsuite import _find_attribute

    return _find_attribute(env.dm_env, "_total_regret")


def _observations(task: str, seed: int, steps: int = 60) -> np.ndarray:
    config = load_config(["bsuite"]).update({"seed": seed})
    env = make(task, config)
    history = rollout(env, steps=steps)  # fixed actions: the observations depend on the env's draws only
    env.close()
    return np.stack([o["observation"] for o in history])


def test_config_seed_makes_the_unseeded_ids_repeatable():
    # catch/0 and cartpole/0 set `seed: None` in bsuite's sweep (seeded by the operating system):
    # the run's seed makes them repeatable, and distinct seeds give distinct episodes.
    for task in ("bsuite_catch/0", "bsuite_cartpole/0"):
        first = _observations(task, seed=3)
        assert np.array_equal(first, _observations(task, seed=3)), task
        assert not np.array_equal(first, _observations(task, seed=4)), task


def test_seeds_bsuite_fixes_are_kept():
    from dreamer_tf.envs.bsuite import _load, _unwrap

    # memory_len's seed defaults to 0 and bandit/3 fixes its mapping_seed: they define the problem.
    task = "bsuite_memory_len/0"
    assert np.array_equal(_observations(task, seed=1, steps=20), _observations(task, seed=2, steps=20))
    rewards = [_unwrap(_load("bandit/3", seed=s))._rewards for s in (1, 2)]
    assert np.array_equal(*rewards)
