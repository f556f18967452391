"""The on-policy rollout: ``length + 1`` batched steps, the last one carried into the next rollout."""

from __future__ import annotations

import numpy as np


class Rollout:
    """Collects the loop's per-step transitions (leading dim = environments) of the wanted keys.

        rollout = Rollout(length=128, keys=["vector", "reward", ...])
        rollout.add(transitions)           # once per loop iteration
        if rollout.full:
            data = rollout.stacked()       # key -> (length + 1, N, ...)
            rollout.restart()              # keeps the last step: it starts the next rollout

    Nothing of it is checkpointed: a resumed run starts a fresh rollout (its environments restart).
    """

    def __init__(self, length: int, keys: list[str]) -> None:
        assert length >= 1, length
        self.length, self.keys = length, list(keys)
        self.steps: list[dict[str, np.ndarray]] = []

    def add(self, transitions: dict[str, np.ndarray]) -> None:
        missing = set(self.keys) - set(transitions)
        assert not missing, f"transitions lack {sorted(missing)}; they have {sorted(transitions)}"
        assert not self.full, "the rollout is full: update and restart it before adding more steps"
        self.steps.append({k: np.asarray(transitions[k]) for k in self.keys})

    @property
    def full(self) -> bool:
        return len(self.steps) == self.length + 1

    def stacked(self) -> dict[str, np.ndarray]:
        assert self.full, (len(self.steps), self.length)
        return {k: np.stack([step[k] for step in self.steps]) for k in self.keys}

    def restart(self) -> None:
        self.steps = self.steps[-1:]

    def clear(self) -> None:
        self.steps = []
