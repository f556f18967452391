"""The contracts between the training loop and its parts, written once.

The loop (``dreamer_tf.run.loop.train``) only ever sees these interfaces; it is
handed factories and never imports a network or an environment:

    agent = make_agent(obs_space, act_space, config)
    replay = make_replay(config)
    envs = make_envs(config)                     # a BatchEnv of config.run.envs environments
    state = agent.init_policy(len(envs))
    obs = envs.step({"reset": np.ones(len(envs), bool), **zero_actions})
    while step < config.run.steps:
        act, state, extra = agent.policy(obs, state, mode="train")
        for i in range(len(envs)):
            replay.add({**obs_i, **act_i, **extra_i}, worker=i)
        obs = envs.step({"reset": np.zeros(len(envs), bool), **act})
        for _ in range(updates_due):
            batch = replay.sample(config.batch_size)          # (B, T + context, ...)
            metrics, updates = agent.train(batch)
            replay.update(updates)                            # fresh latents for replay context

An on-policy agent (PPO) sets ``on_policy = True`` and learns from its own rollouts instead:
the loop makes no replay buffer and, in place of the replay lines above, calls

        agent.observe({**obs, **act, **extra})                # every step, all environments
        if agent.ready():
            metrics, gradient_steps = agent.update()

Environment contract: ``dreamer_tf.envs.base`` (dict observations with
``reward``/``is_first``/``is_last``/``is_terminal``, dict actions with ``reset``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from dreamer_tf.spaces import Space

Batch = dict[str, np.ndarray]


class Agent(Protocol):
    """What the loop needs from an agent (DreamerV3, PPO, random)."""

    obs_space: dict[str, Space]
    act_space: dict[str, Space]

    def init_policy(self, batch_size: int) -> Any:
        """The recurrent state for ``batch_size`` environments before their first step."""

    def policy(self, obs: Batch, state: Any, mode: str = "train") -> tuple[Batch, Any, Batch]:
        """Act on a batch of observations (leading dim = number of environments).

        ``mode`` is ``train`` (sample), ``eval`` (sample; the paper evaluates the
        stochastic policy), ``greedy`` (the mode of the action distribution; an agent
        without one samples) or ``random``. Returns ``(actions, state, extra)``:
        ``extra`` holds per-environment arrays the replay buffer stores next to
        the step (DreamerV3 stores its latent state there for replay context).
        """

    def train(self, batch: Batch) -> tuple[dict[str, float], Batch]:
        """One gradient update on a replayed batch of shape (B, T, ...).

        Returns ``(metrics, replay_updates)``; ``replay_updates`` is empty or
        holds ``stepid`` (B, T') and new values of stored keys for those steps.
        """

    def save(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimizer, normalisers, RNG."""

    def load(self, state: dict[str, Any]) -> None:
        """Restore what ``save`` returned."""


class OnPolicyAgent(Agent, Protocol):
    """An agent that learns from the rollouts it collects (``on_policy = True``); no replay buffer."""

    on_policy: bool

    def observe(self, transitions: Batch) -> None:
        """Take one step of every environment: observations (with reward and flags), the actions
        the policy returned (zeros after an ``is_last`` step) and the policy's ``extra``."""

    def ready(self) -> bool:
        """Whether enough steps are in for an update."""

    def update(self) -> tuple[dict[str, float], int]:
        """Learn from the collected steps; returns ``(metrics, gradient_steps)``."""
