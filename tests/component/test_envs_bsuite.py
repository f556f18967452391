"""BSuite adapter: all ids, real episodes, and bsuite's own CSV logging for its analysis."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bsuite")

from env_contract import rollout

from dreamer_tf.config import load_config
from dreamer_tf.envs import make
from dreamer_tf.envs.bsuite import EXPERIMENTS, BSuite, all_ids, results_dir


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
