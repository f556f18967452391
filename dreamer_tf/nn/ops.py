"""Pure math of DreamerV3 in ``keras.ops``: symlog, twohot bins, λ-returns, normalisers' statistics.

Every function here is stateless and backend-agnostic, and each has a naive
reference test in ``tests/unit``.
"""

from __future__ import annotations

import contextlib
import contextvars

import keras
import numpy as np
from keras import ops

sg = ops.stop_gradient


def symlog(x):
    """sign(x) · ln(|x| + 1) (paper, Eq. 9)."""
    return ops.sign(x) * ops.log1p(ops.abs(x))


def symexp(x):
    """Inverse of symlog: sign(x) · (exp(|x|) − 1)."""
    return ops.sign(x) * ops.expm1(ops.abs(x))


def symexp_bins(num: int = 255, low: float = -20.0, high: float = 20.0) -> np.ndarray:
    """Bin centres ``symexp(linspace(low, high, num))``, built from one half so they are exactly symmetric.

    Exact symmetry matters: with uniform probabilities the expected value must be
    exactly zero, which is how the zero-initialised reward and value heads start.
    """
    assert low == -high, (low, high)
    if num % 2 == 1:
        half = np.linspace(low, 0.0, (num - 1) // 2 + 1, dtype=np.float32)
        half = np.sign(half) * np.expm1(np.abs(half))
        return np.concatenate([half, -half[:-1][::-1]], 0).astype(np.float32)
    half = np.linspace(low, 0.0, num // 2, dtype=np.float32)
    half = np.sign(half) * np.expm1(np.abs(half))
    return np.concatenate([half, -half[::-1]], 0).astype(np.float32)


def twohot(target, bins):
    """Encode scalars as weights on the two nearest bins (paper, Eq. 10).

    ``target`` has any shape S, ``bins`` is sorted with shape (K,); returns S + (K,).
    Weights are linear in the distance to each neighbour; values beyond the
    outermost bins put all weight on that bin.
    """
    bins = ops.convert_to_tensor(bins, "float32")
    target = ops.cast(target, "float32")
    num = bins.shape[0]
    below = ops.sum(ops.cast(bins <= target[..., None], "int32"), -1) - 1
    above = num - ops.sum(ops.cast(bins > target[..., None], "int32"), -1)
    below = ops.clip(below, 0, num - 1)
    above = ops.clip(above, 0, num - 1)
    equal = below == above
    dist_below = ops.where(equal, 1.0, ops.abs(ops.take(bins, below) - target))
    dist_above = ops.where(equal, 1.0, ops.abs(ops.take(bins, above) - target))
    total = dist_below + dist_above
    weight_below = dist_above / total
    weight_above = dist_below / total
    return (
        ops.one_hot(below, num) * weight_below[..., None] + ops.one_hot(above, num) * weight_above[..., None]
    )


def symmetric_expectation(probs, bins):
    """Σ probs · bins for bins symmetric around zero, exactly zero for symmetric probabilities.

    A plain sum leaves a rounding residue (and XLA may fuse the products into
    FMAs, which rounds the two halves differently); pairing each bin with its
    mirror image, Σ_j (p_j − p_−j) · b_j, makes the prediction exactly zero at
    initialisation, where the reward and value heads output uniform probabilities.
    """
    num = bins.shape[0]
    bins = ops.convert_to_tensor(bins, "float32")
    m = num // 2
    left = ops.flip(probs[..., :m], -1)
    if num % 2 == 1:
        return ops.sum((probs[..., m + 1 :] - left) * bins[m + 1 :], -1) + probs[..., m] * bins[m]
    return ops.sum((probs[..., m:] - left) * bins[m:], -1)


def lambda_return(last, term, rew, val, boot, disc: float, lam: float):
    """TD(λ) returns along axis 1, as the official code defines them.

    All inputs are (N, T). Index t holds the state at t, the reward for
    entering it, and whether it is terminal. Returns (N, T − 1):

        R_t = r_{t+1} + γ c_{t+1} ((1 − λ_{t+1}) boot_{t+1} + λ_{t+1} R_{t+1}),   R_{T−1} = boot_{T−1}

    where c = 1 − term and λ_{t+1} = λ (1 − last_{t+1}) cuts the recursion at episode ends.
    """
    live = (1.0 - ops.cast(term, "float32"))[:, 1:] * disc
    cont = (1.0 - ops.cast(last, "float32"))[:, 1:] * lam
    interm = rew[:, 1:] + (1.0 - cont) * live * boot[:, 1:]
    decay = live * cont
    if keras.backend.backend() != "jax":
        # A Python loop: TensorFlow's graph runs it as it stands.
        ret, rets = boot[:, -1], []
        for t in reversed(range(live.shape[1])):
            ret = interm[:, t] + decay[:, t] * ret
            rets.append(ret)
        return ops.stack(rets[::-1], 1)

    # On JAX, a scan: from a Python loop XLA fused each step together with the chain of all later
    # steps, a program quadratic in T (2,400 slices for the 63 replayed steps, 120 MB more memory).
    def step(ret, inputs):
        interm_t, decay_t = inputs
        ret = interm_t + decay_t * ret
        return ret, ret

    backwards = lambda x: ops.flip(ops.transpose(x), 0)  # noqa: E731  (T, N), last step first
    _, rets = scan(step, boot[:, -1], (backwards(interm), backwards(decay)))
    return ops.transpose(ops.flip(rets, 0))


_UNROLL: contextvars.ContextVar[bool] = contextvars.ContextVar("dreamer_tf_unroll", default=False)


@contextlib.contextmanager
def unrolled(flag: bool = True):
    """Trace the ``scan`` calls inside the block as Python loops (``compile.unroll``).

    Set by the backend module (``dreamer_tf.backend``) around the steps it compiles, so that how the
    time loops are compiled is a compile option, not a property of the model.
    """
    token = _UNROLL.set(bool(flag))
    try:
        yield
    finally:
        _UNROLL.reset(token)


def scan(fn, init, xs):
    """``keras.ops.scan`` over axis 0, or a Python loop inside ``unrolled()``.

    ``fn(carry, x) -> (carry, y)``. Unrolling gives the compiler one straight-line
    graph: TensorFlow's XLA cannot compile the gradient of a dynamic while loop,
    and on the CPU the fused, unrolled graph of a small model runs faster.
    The lengths here are static and short (replay chunks, 15 imagined steps).
    """
    if not _UNROLL.get():
        return ops.scan(fn, init, xs)
    length = keras.tree.flatten(xs)[0].shape[0]
    carry, ys = init, []
    for t in range(length):
        carry, y = fn(carry, keras.tree.map_structure(lambda x, t=t: x[t], xs))
        ys.append(y)
    return carry, keras.tree.map_structure(lambda *v: ops.stack(v, 0), *ys)


def masked_mean(x, mask):
    mask = ops.cast(mask, x.dtype)
    return ops.sum(x * mask) / ops.maximum(ops.sum(mask), 1.0)


_RECORDING: contextvars.ContextVar[dict | None] = contextvars.ContextVar("dreamer_tf_recording", default=None)


@contextlib.contextmanager
def recording():
    """Collect the values that ``record`` sees while the block runs: ``with recording() as values:``.

    For eager calls (the parity harness compares the intermediate terms of a train step with the
    official agent's); inside a compiled step the values would be symbolic.
    """
    values: dict = {}
    token = _RECORDING.set(values)
    try:
        yield values
    finally:
        _RECORDING.reset(token)


def record(name: str, value):
    """Return ``value``; keep it under ``name`` when called inside ``recording()``. Free otherwise."""
    values = _RECORDING.get()
    if values is not None:
        values[name] = value
    return value


# ------------------------------------------------------------------ data-parallel replicas
#
# On TensorFlow an update split over several devices runs the model once per device, on that device's
# part of the batch (``compile.devices``; ``dreamer_tf.backend`` runs each part inside ``replicas``).
# Two things must then be taken over the whole batch to give the one-device update: random draws
# (every replica draws the whole batch's noise from the same mirrored seed state and keeps its part)
# and batch statistics (the return percentiles are taken over every replica's values). Elsewhere (JAX,
# one device) the helpers return their input: the compiled step sees the whole batch.

_REPLICAS: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("dreamer_tf_replicas", default=None)


@contextlib.contextmanager
def replicas(index, count: int, gather):
    """Run the block as replica ``index`` (a scalar tensor) of ``count``, each on an equal part of the
    batch; ``gather(x, axis)`` concatenates every replica's ``x``."""
    token = _REPLICAS.set((index, int(count), gather))
    try:
        yield
    finally:
        _REPLICAS.reset(token)


def batch_draw(draw, shape, axis: int = 0):
    """``draw(shape)``, where ``shape[axis]`` is this replica's part of the batch, as one device
    drawing for the whole batch would give it. ``draw`` may append axes (an action vector)."""
    replica = _REPLICAS.get()
    if replica is None:
        return draw(shape)
    index, count, _ = replica
    part = shape[axis]
    whole = draw((*shape[:axis], part * count, *shape[axis + 1 :]))
    begin = [0] * len(whole.shape)
    begin[axis] = ops.cast(index, "int32") * part
    size = list(whole.shape)
    size[axis] = part
    return ops.slice(whole, begin, size)


def whole_batch(x, axis: int = 0):
    """``x`` of every replica concatenated along ``axis``: statistics over the whole batch."""
    replica = _REPLICAS.get()
    return x if replica is None else replica[2](x, axis)
