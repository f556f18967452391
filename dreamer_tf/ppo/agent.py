"""PPO (Schulman et al. 2017) as an on-policy agent of the training loop.

    agent = Agent(env.obs_space, env.act_space, config)      # config.ppo: the fixed configuration
    state = agent.init_policy(num_envs)
    actions, state, extra = agent.policy(obs, state)          # extra: log-prob, value, raw action
    agent.observe({**obs, **actions, **extra})                # the loop, once per step
    if agent.ready():
        metrics, gradient_steps = agent.update()              # epochs x minibatches of clipped PPO

The loop drives it through ``dreamer_tf.run.contracts.OnPolicyAgent`` (``on_policy = True``): no replay
buffer is filled or checkpointed. A checkpoint holds the weights, the optimizer, the return
normaliser, the RNG and the rollout counter; a partly collected rollout is not saved, so a resumed
run starts a fresh one (its environments restart anyway).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from dreamer_tf.config import ConfigError
from dreamer_tf.keras_agent import KerasAgent
from dreamer_tf.ppo.advantages import ReturnNormalizer, gae
from dreamer_tf.ppo.networks import RAW, PPOModel
from dreamer_tf.ppo.rollout import Rollout
from dreamer_tf.spaces import Space

FLAGS = ("reward", "is_first", "is_last", "is_terminal")


class Agent(KerasAgent):
    """PPO implementing ``dreamer_tf.run.contracts.OnPolicyAgent``."""

    on_policy = True

    def __init__(self, obs_space: dict[str, Space], act_space: dict[str, Space], config) -> None:
        super().__init__(obs_space, act_space, config)
        if self.strategy is not None:
            raise ConfigError(
                f"compile.devices {config.compile.devices}: PPO trains on one device on TensorFlow "
                "(its advantage and value statistics are per batch); use KERAS_BACKEND=jax to split it."
            )
        cfg = config.ppo
        model = PPOModel(
            obs_space, self.act_space, config, seed=config.seed, name="ppo", dtype=self.dtype_policy
        )
        optimizer = keras.optimizers.Adam(
            learning_rate=cfg.lr, epsilon=cfg.eps, global_clipnorm=cfg.max_grad_norm
        )
        if self.precision == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, dynamic_growth_steps=1000)
        self.build(model, optimizer)
        self.normalizer = ReturnNormalizer(cfg.value_norm_rate, cfg.value_norm_limit, cfg.value_norm)
        keys = self.model.keys + list(FLAGS) + ["ppo/logp", "ppo/value"] + [RAW + k for k in self.act_space]
        self.rollout = Rollout(cfg.rollout_length, sorted(set(keys)))
        self.rollouts = 0

    # ------------------------------------------------------------------ acting

    def init_policy(self, batch_size: int) -> Any:
        return ()  # feed-forward networks: no recurrent state

    def policy(self, obs: dict, state: Any, mode: str = "train") -> tuple[dict, Any, dict]:
        if mode == "random":
            return self.random_policy(obs, state)
        inputs = {"is_first": np.asarray(obs["is_first"]), **self.inputs(obs)}
        # The paper evaluates the stochastic policy: ``eval`` samples too; ``greedy`` takes the mode.
        raw, state, extra = self.runner.policy(inputs, state, mode != "greedy")
        actions = {key: self._to_env(key, raw[key]) for key in self.act_space}
        return actions, state, extra

    def _to_env(self, key: str, raw: np.ndarray) -> np.ndarray:
        space = self.act_space[key]
        if space.discrete:
            return (raw + space.low).astype(space.dtype)
        # Gaussian samples are clipped to [-1, 1] and mapped onto the space's bounds; the
        # unclipped sample stays in ``extra`` so the log-probabilities stay exact.
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        unit = np.clip(raw, -1.0, 1.0)
        return (low + (unit + 1.0) / 2.0 * (high - low)).astype(space.dtype)

    # ------------------------------------------------------------------ learning

    def observe(self, transitions: dict[str, np.ndarray]) -> None:
        """Add one loop step (obs, actions, extra of every environment) to the rollout."""
        steps = self.config.ppo.rollout_steps
        if steps and not self.rollout.steps:  # a fixed batch per update, however many envs
            self.rollout.length = max(1, -(-int(steps) // len(transitions["reward"])))
        self.rollout.add(transitions)

    def ready(self) -> bool:
        """Whether ``rollout_length`` steps per environment (plus the bootstrap step) are in."""
        return self.rollout.full

    def update(self) -> tuple[dict[str, float], int]:
        """Epochs of minibatch updates on the full rollout; returns (metrics, gradient steps)."""
        cfg = self.config.ppo
        data = self.rollout.stacked()
        self.rollout.restart()
        T, N = data["reward"].shape[0] - 1, data["reward"].shape[1]
        values = self.normalizer.denormalize(data["ppo/value"])
        advantage, returns, valid = gae(
            data["reward"].astype(np.float64),
            values.astype(np.float64),
            data["is_first"],
            data["is_last"],
            data["is_terminal"],
            cfg.discount,
            cfg.lam,
        )
        mask = valid > 0
        explained = _explained_variance(values[:-1][mask], returns[mask])
        self.normalizer.update(returns[mask])
        flat = {k: _flat(data[k][:-1]) for k in self.model.keys + [RAW + k for k in self.act_space]}
        flat.update(
            old_logp=_flat(data["ppo/logp"][:-1]),
            advantage=_flat(advantage),
            target=_flat(self.normalizer.normalize(returns)),
            old_value=_flat(self.normalizer.normalize(values[:-1])),
            mask=_flat(valid),
        )
        size = T * N // cfg.minibatches
        metrics: dict[str, list[float]] = {}
        count = 0
        for _ in range(cfg.epochs):
            order = self._rng.permutation(T * N)
            for i in range(cfg.minibatches):
                index = order[i * size : (i + 1) * size]
                result, _ = self.runner.train({k: v[index] for k, v in flat.items()})
                for key, value in result.items():
                    metrics.setdefault(key, []).append(value)
                count += 1
        self.rollouts += 1
        out = {k: float(np.mean(v)) for k, v in metrics.items()}
        if explained is not None:
            out["explained_variance"] = explained
        out.update(
            {
                "advantage/mean": float(advantage[mask].mean()) if mask.any() else 0.0,
                "return/mean": float(returns[mask].mean()) if mask.any() else 0.0,
                "value_norm/mean": self.normalizer.mean,
                "value_norm/scale": self.normalizer.scale,
                "rollouts": float(self.rollouts),
            }
        )
        return out, count

    def train(self, batch: dict) -> tuple[dict[str, float], dict]:
        raise NotImplementedError(
            "PPO learns from its own rollouts (observe / ready / update), not from replayed batches."
        )

    # ------------------------------------------------------------------ checkpoints

    def extra_state(self) -> dict[str, Any]:
        return {"normalizer": self.normalizer.state(), "rollouts": self.rollouts}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.normalizer.load(state["normalizer"])
        self.rollouts = int(state["rollouts"])
        self.rollout.clear()  # a partly collected rollout is not checkpointed


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape((-1, *x.shape[2:]))


def _explained_variance(prediction: np.ndarray, target: np.ndarray) -> float | None:
    """1 − Var(target − prediction) / Var(target): 1 is a perfect critic, 0 no better than a constant.

    ``None`` when the returns do not vary (the ratio is undefined).
    """
    var = float(np.var(target)) if target.size else 0.0
    if var == 0.0:
        return None
    return 1.0 - float(np.var(target - prediction)) / var
