"""Output distributions of the networks, in float32 ``keras.ops``.

Sampling takes pre-drawn noise (Gumbel for categoricals, standard normal for
Gaussians) instead of a seed. This keeps every function pure, so the same code
runs inside ``keras.ops.scan`` on TensorFlow and inside ``jax.jit`` on JAX,
and a seed reproduces the same trajectory on both.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from dreamer_tf.nn import ops as dops

sg = ops.stop_gradient


def gumbel(shape, seed) -> keras.KerasTensor:
    """Standard Gumbel noise; ``argmax(logits + gumbel)`` samples from ``softmax(logits)``."""
    uniform = keras.random.uniform(shape, minval=1e-6, maxval=1.0 - 1e-6, seed=seed)
    return -ops.log(-ops.log(uniform))


class Categorical:
    """Categorical over the last axis, optionally mixed with 1% uniform (``unimix``, paper §Robustness)."""

    def __init__(self, logits, unimix: float = 0.0) -> None:
        logits = ops.cast(logits, "float32")
        if unimix:
            probs = ops.softmax(logits, -1)
            probs = (1.0 - unimix) * probs + unimix / logits.shape[-1]
            self.logprobs = ops.log(probs)
        else:
            self.logprobs = ops.log_softmax(logits, -1)
        self.classes = logits.shape[-1]

    @property
    def probs(self):
        return ops.exp(self.logprobs)

    def sample(self, noise):
        """Index sample by the Gumbel-max trick; ``noise`` has the shape of the logits."""
        return ops.argmax(self.logprobs + noise, -1)

    def mode(self):
        return ops.argmax(self.logprobs, -1)

    def log_prob(self, index):
        onehot = ops.one_hot(ops.cast(index, "int32"), self.classes)
        return ops.sum(self.logprobs * onehot, -1)

    def entropy(self):
        return -ops.sum(self.probs * self.logprobs, -1)

    def kl(self, other: Categorical):
        return ops.sum(self.probs * (self.logprobs - other.logprobs), -1)

    @property
    def min_entropy(self) -> float:
        return 0.0

    @property
    def max_entropy(self) -> float:
        return math.log(self.classes)


class OneHot(Categorical):
    """Categorical whose samples are one-hot vectors with straight-through gradients."""

    def sample(self, noise):
        index = super().sample(noise)
        return self._straight_through(index)

    def mode(self):
        return self._straight_through(super().mode())

    def log_prob(self, onehot):
        return ops.sum(self.logprobs * onehot, -1)

    def _straight_through(self, index):
        value = ops.one_hot(index, self.classes)
        probs = self.probs
        return sg(value) + (probs - sg(probs))


class BoundedNormal:
    """Normal with tanh-squashed mean and std in [minstd, maxstd] (continuous actor)."""

    def __init__(self, mean, std, minstd: float = 0.1, maxstd: float = 1.0) -> None:
        self.mean = ops.tanh(ops.cast(mean, "float32"))
        self.std = (maxstd - minstd) * ops.sigmoid(ops.cast(std, "float32") + 2.0) + minstd
        self.minstd, self.maxstd = minstd, maxstd

    def sample(self, noise):
        return self.mean + self.std * noise

    def mode(self):
        return self.mean

    def log_prob(self, x):
        z = (ops.cast(x, "float32") - self.mean) / self.std
        return ops.sum(-0.5 * ops.square(z) - ops.log(self.std) - 0.5 * math.log(2 * math.pi), -1)

    def entropy(self):
        return ops.sum(0.5 * math.log(2 * math.pi * math.e) + ops.log(self.std), -1)

    @property
    def min_entropy(self) -> float:
        return self.mean.shape[-1] * (0.5 * math.log(2 * math.pi * math.e) + math.log(self.minstd))

    @property
    def max_entropy(self) -> float:
        return self.mean.shape[-1] * (0.5 * math.log(2 * math.pi * math.e) + math.log(self.maxstd))


class TwoHot:
    """Categorical over fixed bins, trained with twohot targets (reward and critic heads)."""

    def __init__(self, logits, bins) -> None:
        self.logits = ops.cast(logits, "float32")
        self.bins = bins
        assert self.logits.shape[-1] == len(bins), (self.logits.shape, len(bins))

    def pred(self):
        return dops.symmetric_expectation(ops.softmax(self.logits, -1), self.bins)

    def loss(self, target):
        target = dops.twohot(sg(ops.cast(target, "float32")), self.bins)
        return -ops.sum(target * ops.log_softmax(self.logits, -1), -1)


class MSE:
    """Deterministic prediction with squared error, optionally in symlog space."""

    def __init__(self, pred, symlog: bool = False) -> None:
        self.raw = ops.cast(pred, "float32")
        self.symlog = symlog

    def pred(self):
        return dops.symexp(self.raw) if self.symlog else self.raw

    def loss(self, target):
        target = sg(ops.cast(target, "float32"))
        if self.symlog:
            target = dops.symlog(target)
        return ops.square(self.raw - target)


class Bernoulli:
    """Binary outcome from a logit; ``log_prob`` accepts soft targets in [0, 1]."""

    def __init__(self, logit) -> None:
        self.logit = ops.cast(logit, "float32")

    def prob(self):
        return ops.sigmoid(self.logit)

    def log_prob(self, event):
        event = ops.cast(event, "float32")
        return event * ops.log_sigmoid(self.logit) + (1.0 - event) * ops.log_sigmoid(-self.logit)

    def loss(self, target):
        return -self.log_prob(sg(target))
