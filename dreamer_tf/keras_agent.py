"""What the Keras agents (DreamerV3 and PPO) share: precision, seeding, the compiled runner, input
checks, random actions and checkpoints.

    class Agent(KerasAgent):
        def __init__(self, obs_space, act_space, config):
            super().__init__(obs_space, act_space, config)           # precision, seeds, RNG
            with self.scope():                                        # the devices' scope (compile.devices)
                model = MyModel(..., dtype=self.dtype_policy)         # a keras Layer with policy_step / train_loss
                self.build(model, optimizer)                          # the backend's compiled runner

A subclass adds its own state to checkpoints through ``extra_state`` / ``load_extra_state``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import keras
import numpy as np

from dreamer_tf import backend
from dreamer_tf.spaces import Space, random_actions

Batch = dict[str, np.ndarray]

# The Keras dtype policy of each compute precision (variables stay float32).
DTYPE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


class KerasAgent:
    """The base of DreamerV3's and PPO's agents (the loop's ``Agent`` protocol, ``dreamer_tf.run.contracts``).

    Sets ``obs_space``, ``act_space`` (without ``reset``, the loop's business), ``config``,
    ``precision`` (``compile.precision`` resolved for this machine), the global Keras seed and a NumPy
    generator for random actions; ``build`` adds ``model``, ``optimizer`` and ``runner``.
    """

    def __init__(self, obs_space: dict[str, Space], act_space: dict[str, Space], config) -> None:
        self.obs_space = obs_space
        self.act_space = {k: v for k, v in act_space.items() if k != "reset"}
        self.config = config
        self.precision = backend.resolve_precision(config.compile.precision)
        backend.set_seed(config.seed)
        self._rng = np.random.default_rng(config.seed)
        # TensorFlow with compile.devices > 1: the model and optimizer are built in its scope.
        self.strategy = backend.make_strategy(config.compile)

    def scope(self) -> Any:
        """The block in which a subclass builds its model and calls ``build``."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @property
    def dtype_policy(self) -> keras.DTypePolicy:
        return keras.DTypePolicy(DTYPE_POLICIES[self.precision])

    def build(self, model, optimizer) -> None:
        """Keep the model and optimizer and compile their steps (``dreamer_tf.backend.make_runner``)."""
        self.model, self.optimizer = model, optimizer
        self.runner = backend.make_runner(model, optimizer, self.config.compile, self.strategy)

    @property
    def param_count(self) -> int:
        return int(sum(math.prod(v.shape) for v in self.model.trainable_variables))

    def random_policy(self, obs: Batch, state: Any) -> tuple[Batch, Any, Batch]:
        """Uniform actions for every environment (``mode="random"``); the state passes through."""
        return random_actions(self.act_space, len(obs["is_first"]), self._rng), state, {}

    def inputs(self, obs: Batch) -> Batch:
        """The observations the model reads (``model.keys``), checked against their spaces."""
        return checked_inputs(obs, self.model.keys, self.obs_space)

    def reseed(self, seed: int) -> None:
        """Restart the policy's random draws from ``seed`` (the model's seed generator and the
        random-action generator), e.g. to evaluate a loaded checkpoint reproducibly."""
        seeds = getattr(self.model, "seeds", None)
        if seeds is not None:
            seeds.state.assign(np.array([seed % 2**32, 0]).astype(seeds.state.dtype))
            self.runner.reload()
        self._rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ checkpoints

    def extra_state(self) -> dict[str, Any]:
        """A subclass's own state for checkpoints, besides weights, optimizer and RNG."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` returned."""

    def save(self) -> dict[str, Any]:
        self.runner.sync()
        return {
            **save_variables(self.model, self.optimizer),
            **self.extra_state(),
            "rng": self._rng.bit_generator.state,
        }

    def weights(self) -> dict[str, np.ndarray]:
        """The trainable weights by their Keras path (``.../dense/kernel``), as numpy (for histograms)."""
        self.runner.sync()
        return {v.path: keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables}

    def load(self, state: dict[str, Any]) -> None:
        load_variables(state, self.model, self.optimizer)
        self._rng.bit_generator.state = state["rng"]
        self.load_extra_state(state)
        self.runner.reload()


def checked_inputs(obs: Batch, keys, obs_space: dict[str, Space]) -> Batch:
    """The observations under ``keys`` as arrays, each checked against its declared space.

    Raises a ``ValueError`` naming the key when the per-environment shape differs, or the dtype
    differs beyond precision within one kind (float32/float64 pass; uint8 images must be uint8).
    """
    inputs = {}
    for key in keys:
        value = np.asarray(obs[key])
        space = obs_space[key]
        if value.shape[1:] != space.shape:
            raise ValueError(
                f"Observation '{key}' has shape {value.shape[1:]} per environment but its space "
                f"declares {space.shape} ({space})."
            )
        if value.dtype != space.dtype and not (value.dtype.kind == space.dtype.kind != "u"):
            raise ValueError(f"Observation '{key}' has dtype {value.dtype} but its space declares {space}.")
        inputs[key] = value
    return inputs


def save_variables(model, optimizer) -> dict[str, Any]:
    """The model's and the optimizer's variables as numpy arrays, for a checkpoint."""
    return {
        "model": [np.asarray(v) for v in model.variables],
        "optimizer": [np.asarray(v) for v in optimizer.variables],
    }


def load_variables(state: dict[str, Any], model, optimizer) -> None:
    """Assign what ``save_variables`` returned; a checkpoint of another config is a clear error."""
    for name, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        values = state[name]
        if len(values) != len(variables):
            raise ValueError(
                f"Checkpoint {name} has {len(values)} arrays but the agent has {len(variables)}; "
                "was it written with a different config?"
            )
        for var, value in zip(variables, values):
            if tuple(var.shape) != tuple(np.shape(value)):
                raise ValueError(
                    f"Checkpoint {name} variable {var.path} has shape {np.shape(value)}, "
                    f"the agent expects {tuple(var.shape)}; was it written with a different config?"
                )
            var.assign(value)
