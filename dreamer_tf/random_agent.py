"""An agent that acts uniformly at random: a baseline and a stand-in for tests.

It implements the ``dreamer_tf.run.contracts.Agent`` protocol, so the training loop
drives it exactly like DreamerV3 (``--agent random`` on the command line):

    agent = RandomAgent(envs.obs_space, envs.act_space, config)
    state = agent.init_policy(len(envs))
    act, state, extra = agent.policy(obs, state, mode="train")   # act["action"]: (N, ...)
    metrics, updates = agent.train(batch)                          # ({}, {}): nothing to learn
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dreamer_tf.spaces import Space, random_actions


class RandomAgent:
    """Samples every action key uniformly from its space; never learns.

    ``config`` may be ``None``; otherwise ``config.seed`` seeds the actions so
    that two runs with the same seed take the same actions.
    """

    def __init__(self, obs_space: dict[str, Space], act_space: dict[str, Space], config: Any = None) -> None:
        self.obs_space = dict(obs_space)
        # ``reset`` is the loop's business, not the agent's.
        self.act_space = {k: v for k, v in act_space.items() if k != "reset"}
        seed = int(config.seed) if config is not None and "seed" in config else 0
        self._rng = np.random.default_rng(seed)

    def init_policy(self, batch_size: int) -> Any:
        return None

    def policy(self, obs: dict[str, np.ndarray], state: Any, mode: str = "train") -> tuple[dict, Any, dict]:
        return random_actions(self.act_space, len(obs["is_first"]), self._rng), state, {}

    def train(self, batch: dict[str, np.ndarray]) -> tuple[dict[str, float], dict]:
        return {}, {}

    def save(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def load(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]
