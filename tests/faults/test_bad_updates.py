"""A train step on a batch that makes the loss non-finite is skipped: weights, optimizer state and the
model's other state stay as they were, and the step reports ``opt/skipped`` and the bad loss term.

Runs on the active Keras backend (``KERAS_BACKEND=tensorflow`` or ``jax``): both runners implement it.
"""

from __future__ import annotations

import numpy as np
import pytest

from dreamer_tf.config import load_config
from dreamer_tf.dreamerv3.agent import Agent
from dreamer_tf.spaces import Space

OBS_SPACE = {
    "vector": Space(np.float32, (5,)),
    "reward": Space(np.float32),
    "is_first": Space(bool),
    "is_last": Space(bool),
    "is_terminal": Space(bool),
}
ACT_SPACE = {"action": Space(np.int32, (), 0, 3)}


def make_batch(agent: Agent, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    config = agent.config
    B, T = config.batch_size, config.batch_length + config.replay_context
    dyn = config.agent.dyn
    is_first = rng.random((B, T)) < 0.1
    is_last = np.roll(is_first, -1, axis=1)
    return {
        "vector": rng.normal(size=(B, T, 5)).astype(np.float32),
        "reward": rng.normal(size=(B, T)).astype(np.float32),
        "is_first": is_first,
        "is_last": is_last,
        "is_terminal": is_last & (rng.random((B, T)) < 0.5),
        "action": rng.integers(0, 3, (B, T)).astype(np.int32),
        "dyn/deter": rng.normal(size=(B, T, dyn.deter)).astype(np.float32),
        "dyn/stoch": rng.integers(0, dyn.classes, (B, T, dyn.stoch)).astype(np.int32),
        "stepid": np.arange(B * T, dtype=np.int64).reshape(B, T),
    }


def snapshot(agent: Agent) -> dict[str, list[np.ndarray]]:
    state = agent.save()
    return {
        "model": [np.array(v) for v in state["model"]],
        "optimizer": [np.array(v) for v in state["optimizer"]],
    }


@pytest.fixture(scope="module")
def agent():
    config = load_config(["debug"], ["--agent.opt.lr", "1e-3", "--agent.opt.warmup", "0"])
    return Agent(OBS_SPACE, ACT_SPACE, config)


@pytest.mark.parametrize("key", ["reward", "vector"])
def test_a_non_finite_loss_skips_the_update(agent, key):
    agent.train(make_batch(agent, 1))  # the optimizer has state worth keeping
    before = snapshot(agent)
    batch = make_batch(agent, 2)
    batch[key][1, 3] = np.nan
    metrics, _ = agent.train(batch)
    assert metrics["opt/skipped"] == 1.0
    assert not np.isfinite(metrics["opt/loss"])
    bad = {k for k, v in metrics.items() if k.startswith("loss/") and not np.isfinite(v)}
    assert bad, metrics
    if key == "reward":
        assert "loss/rew" in bad
    after = snapshot(agent)
    for part in ("model", "optimizer"):  # the model's variables include the non-trainable ones
        assert len(after[part]) == len(before[part])
        for old, new in zip(before[part], after[part]):
            np.testing.assert_array_equal(new, old)
            assert np.isfinite(new).all() if new.dtype.kind == "f" else True
    # The next finite batch trains normally from the kept weights.
    metrics, _ = agent.train(make_batch(agent, 3))
    assert metrics["opt/skipped"] == 0.0 and np.isfinite(metrics["opt/loss"])
    changed = [not np.array_equal(old, new) for old, new in zip(before["model"], snapshot(agent)["model"])]
    assert any(changed)
