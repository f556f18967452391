"""GAE(λ) for rollouts stored in the loop's convention, and the return normaliser. Pure NumPy.

A rollout holds T + 1 observations per environment, index t = 0..T. Each observation carries the
reward and flags of the step that produced it (``dreamer_tf.envs.base``): ``reward[t + 1]`` is
the reward for the action taken at t, ``is_last[t + 1]`` ends the episode after it and
``is_terminal[t + 1]`` says whether that end is a real termination (value 0) or a truncation
(bootstrap from the value of the last observation, which the policy computed like any other).
The action at an ``is_last`` step is never executed, and an ``is_first`` at t + 1 without an
``is_last`` at t means the environment was restarted (a resumed run): such steps are not
decision steps and get no advantage.
"""

from __future__ import annotations

import numpy as np


def gae(
    reward: np.ndarray,
    value: np.ndarray,
    is_first: np.ndarray,
    is_last: np.ndarray,
    is_terminal: np.ndarray,
    discount: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Advantages, λ-returns and the decision-step mask of a rollout.

    All inputs have shape (T + 1, N). Returns three arrays of shape (T, N): advantages
    A_t = Σ_k (γλ)^k δ_{t+k} within the episode, returns A_t + V_t, and ``valid`` (float
    32, 1 where step t is a decision step whose successor belongs to the same episode).
    """
    assert reward.ndim == 2 and reward.shape == value.shape == is_last.shape, (
        reward.shape,
        value.shape,
        is_last.shape,
    )
    assert is_first.shape == is_terminal.shape == reward.shape, (is_first.shape, is_terminal.shape)
    steps = reward.shape[0] - 1
    is_last, is_first, is_terminal = (np.asarray(x, bool) for x in (is_last, is_first, is_terminal))
    valid = ~is_last[:-1] & ~is_first[1:]
    next_value = np.where(is_terminal[1:], 0.0, value[1:])
    delta = reward[1:] + discount * next_value - value[:-1]
    advantage = np.zeros_like(delta, dtype=np.float64)
    last = np.zeros(reward.shape[1], np.float64)
    for t in reversed(range(steps)):
        # The chain continues only into a decision step of the same episode.
        cont = valid[t + 1] if t + 1 < steps else np.zeros_like(valid[t])
        last = np.where(valid[t], delta[t] + discount * lam * cont * last, 0.0)
        advantage[t] = last
    returns = advantage + value[:-1]
    return advantage.astype(np.float32), returns.astype(np.float32), valid.astype(np.float32)


class ReturnNormalizer:
    """Debiased EMA of the mean and standard deviation of the λ-returns.

    The critic predicts ``(return - mean) / scale`` (Acme's ``normalize_value``), so one set of
    hyperparameters fits rewards of any magnitude. ``scale = max(limit, std)``: like DreamerV3's
    ``max(1, S)`` return scale, large returns are scaled down and small ones are never blown up.
    """

    def __init__(self, rate: float, limit: float, enabled: bool = True) -> None:
        self.rate, self.limit, self.enabled = rate, limit, enabled
        self.mean_ema, self.sq_ema, self.weight = 0.0, 0.0, 0.0

    @property
    def mean(self) -> float:
        if not self.enabled or self.weight == 0:
            return 0.0
        return self.mean_ema / self.weight

    @property
    def scale(self) -> float:
        if not self.enabled or self.weight == 0:
            return 1.0
        var = max(self.sq_ema / self.weight - self.mean**2, 0.0)
        return max(self.limit, float(np.sqrt(var)))

    def update(self, returns: np.ndarray) -> None:
        if not self.enabled or returns.size == 0:
            return
        r = self.rate
        self.mean_ema = (1 - r) * self.mean_ema + r * float(np.mean(returns))
        self.sq_ema = (1 - r) * self.sq_ema + r * float(np.mean(np.square(returns, dtype=np.float64)))
        self.weight = (1 - r) * self.weight + r

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * self.scale + self.mean).astype(np.float32)

    def state(self) -> dict[str, float]:
        return {"mean_ema": self.mean_ema, "sq_ema": self.sq_ema, "weight": self.weight}

    def load(self, state: dict[str, float]) -> None:
        self.mean_ema, self.sq_ema = float(state["mean_ema"]), float(state["sq_ema"])
        self.weight = float(state["weight"])
