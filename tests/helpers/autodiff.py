"""Gradients for tests, with the active Keras backend's own autodiff."""

from __future__ import annotations

import keras
import numpy as np
import pytest


def value_and_gradient(fn, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``fn(x)`` and d fn(x) / dx for a scalar ``fn`` of one float32 array (zeros where it does not depend on x)."""
    x = np.asarray(x, np.float32)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        value = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(value)
            out = fn(value)
        grad = tape.gradient(out, value)
        return np.asarray(out), np.zeros_like(x) if grad is None else grad.numpy()
    if backend == "jax":
        import jax

        out, grad = jax.value_and_grad(fn)(x)
        return np.asarray(out), np.asarray(grad)
    pytest.skip(f"no autodiff helper for backend {backend}")


def gradient(fn, x: np.ndarray) -> np.ndarray:
    """d fn(x) / dx; see ``value_and_gradient``."""
    return value_and_gradient(fn, x)[1]
