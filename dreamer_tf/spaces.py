"""Observation and action spaces shared by environments, replay and agents.

A space is a dtype, a shape and bounds. Integer and boolean spaces are
discrete; a discrete space with ``shape == ()`` is a categorical choice among
``high - low`` values. Images are ``uint8`` spaces of rank 3 (H, W, C).

    space = Space(np.float32, (3,), -1.0, 1.0)
    space.check(np.zeros(3, np.float32), "position")   # raises with the key named
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Space:
    """A box of values: ``dtype``, ``shape`` and inclusive-exclusive bounds.

    For discrete spaces ``high`` is exclusive (``Space(np.int32, (), 0, 5)`` has
    the values 0..4); for continuous spaces both bounds are inclusive.
    """

    def __init__(
        self,
        dtype: Any,
        shape: tuple[int, ...] | int = (),
        low: float | np.ndarray | None = None,
        high: float | np.ndarray | None = None,
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = (shape,) if isinstance(shape, int) else tuple(int(x) for x in shape)
        if self.dtype == np.bool_:
            low, high = 0, 2
        if low is None:
            low = _dtype_min(self.dtype)
        if high is None:
            high = _dtype_max(self.dtype)
        self.low = np.broadcast_to(np.asarray(low), self.shape)
        self.high = np.broadcast_to(np.asarray(high), self.shape)

    @property
    def discrete(self) -> bool:
        return bool(np.issubdtype(self.dtype, np.integer) or self.dtype == np.bool_)

    @property
    def classes(self) -> int:
        """Number of values of a discrete space (all elements must agree)."""
        assert self.discrete, f"classes of a continuous space {self}"
        counts = np.asarray(self.high, np.int64) - np.asarray(self.low, np.int64)
        counts = np.unique(counts)
        assert len(counts) == 1, f"discrete space with unequal class counts: {self}"
        return int(counts[0])

    @property
    def is_image(self) -> bool:
        return self.dtype == np.uint8 and len(self.shape) == 3

    def sample(self, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng or np.random.default_rng()
        if self.dtype == np.bool_:
            return rng.integers(0, 2, self.shape).astype(bool)
        if self.discrete:
            return rng.integers(self.low, self.high, self.shape).astype(self.dtype)
        low = np.maximum(np.asarray(self.low, np.float64), -1e6)
        high = np.minimum(np.asarray(self.high, np.float64), 1e6)
        return rng.uniform(low, high, self.shape).astype(self.dtype)

    def check(self, value: Any, key: str = "value") -> None:
        """Raise a ValueError naming ``key`` if ``value`` does not fit this space."""
        array = np.asarray(value)
        if array.shape != self.shape:
            raise ValueError(f"'{key}' has shape {array.shape} but its space declares {self.shape} ({self}).")
        if array.dtype != self.dtype and not _compatible(array.dtype, self.dtype):
            raise ValueError(f"'{key}' has dtype {array.dtype} but its space declares {self.dtype} ({self}).")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Space)
            and self.dtype == other.dtype
            and self.shape == other.shape
            and np.array_equal(self.low, other.low)
            and np.array_equal(self.high, other.high)
        )

    def __repr__(self) -> str:
        low, high = self.low, self.high
        if low.size and (low == low.flat[0]).all():
            low = low.flat[0]
        if high.size and (high == high.flat[0]).all():
            high = high.flat[0]
        return f"Space({self.dtype.name}, shape={self.shape}, low={low}, high={high})"


def _compatible(actual: np.dtype, declared: np.dtype) -> bool:
    # A Python float or int that numpy stored with a wider type of the same kind is accepted;
    # a different kind (float for an image, int for a float vector) is not.
    return actual.kind == declared.kind and actual.kind in "fiu" and actual != np.uint8


def _dtype_min(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.integer):
        return np.iinfo(dtype).min
    return -np.inf


def _dtype_max(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.integer):
        return np.iinfo(dtype).max
    return np.inf


def random_actions(
    act_space: dict[str, Space], count: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Uniform actions for ``count`` environments (``mode="random"``)."""
    return {k: np.stack([s.sample(rng) for _ in range(count)]).astype(s.dtype) for k, s in act_space.items()}
