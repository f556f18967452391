"""PPO's losses and its Gaussian policy distribution, in float32 ``keras.ops`` (pure functions)."""

from __future__ import annotations

import math

from keras import ops


def masked_mean(x, mask):
    """Mean of ``x`` over the entries where ``mask`` is 1 (at least one entry counts)."""
    mask = ops.cast(mask, "float32")
    return ops.sum(ops.cast(x, "float32") * mask) / ops.maximum(ops.sum(mask), 1.0)


def normalize_advantages(advantage, mask, eps: float = 1e-8):
    """Zero mean, unit standard deviation over the masked entries (cleanrl's ``norm_adv``)."""
    mean = masked_mean(advantage, mask)
    std = ops.sqrt(masked_mean(ops.square(advantage - mean), mask))
    return (advantage - mean) / (std + eps)


def clipped_surrogate(logp, old_logp, advantage, clip: float):
    """Per-sample loss −min(ρA, clip(ρ, 1 − ε, 1 + ε)A) with ρ = π(a|s) / π_old(a|s) (PPO, Eq. 7).

    Where the ratio left the trust region in the direction the advantage favours, the clipped
    term is the minimum and its gradient is zero: the update cannot push the ratio further.
    """
    ratio = ops.exp(logp - old_logp)
    unclipped = ratio * advantage
    clipped = ops.clip(ratio, 1.0 - clip, 1.0 + clip) * advantage
    return -ops.minimum(unclipped, clipped)


def value_loss(value, target, old_value, clip: float):
    """0.5 (V − target)², or with ``clip > 0`` the pessimistic max with V clipped to old ± clip."""
    loss = ops.square(value - target)
    if clip > 0:
        clipped = old_value + ops.clip(value - old_value, -clip, clip)
        loss = ops.maximum(loss, ops.square(clipped - target))
    return 0.5 * loss


class Normal:
    """Diagonal Gaussian with a state-independent log standard deviation (cleanrl, SB3)."""

    def __init__(self, mean, log_std) -> None:
        self.mean = ops.cast(mean, "float32")
        self.log_std = ops.cast(log_std, "float32") + ops.zeros_like(self.mean)

    def sample(self, noise):
        return self.mean + ops.exp(self.log_std) * noise

    def mode(self):
        return self.mean

    def log_prob(self, x):
        z = (ops.cast(x, "float32") - self.mean) * ops.exp(-self.log_std)
        dims = -0.5 * ops.square(z) - self.log_std - 0.5 * math.log(2 * math.pi)
        return ops.sum(ops.reshape(dims, (ops.shape(dims)[0], -1)), -1)

    def entropy(self):
        dims = 0.5 * math.log(2 * math.pi * math.e) + self.log_std
        return ops.sum(ops.reshape(dims, (ops.shape(dims)[0], -1)), -1)
