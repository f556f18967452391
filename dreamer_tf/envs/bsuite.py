"""Behaviour Suite (Osband et al. 2020): 23 experiments, 468 configurations by bsuite id.

Tasks are bsuite ids: ``bsuite_catch/0``, ``bsuite_deep_sea/21``; a bare experiment
(``bsuite_catch``) means its configuration 0. Every episode is recorded with bsuite's
own CSV logger, so bsuite's analysis (``bsuite.logging.csv_load`` and
``bsuite.experiments.summary_analysis``) scores a run by capability. The results go to
``config.env.bsuite.logdir``, or else ``<config.logdir>/bsuite``, or else
``~/logdir/dreamer_tf/bsuite``.

bsuite logging is stateful: an interrupted run cannot resume its CSV; a second run
into the same folder fails unless ``config.env.bsuite.overwrite`` is set. Each
configuration prescribes its number of episodes (``bsuite_num_episodes``); the
environment keeps running after that, and ``finished`` tells the loop it may stop.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from dreamer_tf.envs.base import Env
from dreamer_tf.envs.wrappers import FromDM, Wrapper, require, standardize

INSTALL = "pip install bsuite==0.3.6"

# Number of configurations of each experiment in bsuite.sweep (468 in all).
EXPERIMENTS = {
    "bandit": 20, "bandit_noise": 20, "bandit_scale": 20, "cartpole": 20, "cartpole_noise": 20,
    "cartpole_scale": 20, "cartpole_swingup": 20, "catch": 20, "catch_noise": 20, "catch_scale": 20,
    "deep_sea": 21, "deep_sea_stochastic": 21, "discounting_chain": 20, "memory_len": 23,
    "memory_size": 17, "mnist": 20, "mnist_noise": 20, "mnist_scale": 20, "mountain_car": 20,
    "mountain_car_noise": 20, "mountain_car_scale": 20, "umbrella_distract": 23, "umbrella_length": 23,
}  # fmt: skip


def all_ids() -> list[str]:
    """Every bsuite id, from ``bsuite.sweep`` when installed, else from the table above."""
    try:
        require("bsuite", "bsuite", INSTALL)
        from bsuite import sweep

        return list(sweep.SWEEP)
    except ImportError:
        return [f"{name}/{index}" for name, count in EXPERIMENTS.items() for index in range(count)]


def results_dir(config: Any) -> str:
    """Where the CSV files go (see the module docstring)."""
    settings = config.env.bsuite
    if settings.get("logdir"):
        return os.path.expanduser(str(settings.logdir))
    if config.get("logdir"):
        return os.path.join(os.path.expanduser(str(config.logdir)), "bsuite")
    return os.path.expanduser(os.path.join("~", "logdir", "dreamer_tf", "bsuite"))


class BSuite(Wrapper):
    """One bsuite configuration, recorded to ``directory`` in bsuite's CSV format."""

    def __init__(self, bsuite_id: str, directory: str | None, overwrite: bool = False) -> None:
        if "/" not in bsuite_id:
            bsuite_id = f"{bsuite_id}/0"
        bsuite = require("bsuite", "bsuite", INSTALL)
        from bsuite import sweep

        if bsuite_id not in sweep.SETTINGS:
            experiment = bsuite_id.split("/")[0]
            count = EXPERIMENTS.get(experiment)
            valid = f"0..{count - 1}" if count else f"experiments: {', '.join(EXPERIMENTS)}"
            raise ValueError(f"Unknown bsuite id '{bsuite_id}' ({valid}).")
        if directory:
            os.makedirs(directory, exist_ok=True)
            dmenv = bsuite.load_and_record_to_csv(bsuite_id, results_dir=directory, overwrite=overwrite)
        else:
            dmenv = bsuite.load_from_id(bsuite_id)
        self.bsuite_id = bsuite_id
        self.directory = directory
        self.num_episodes = 0
        self.max_episodes = int(_unwrap(dmenv).bsuite_num_episodes)
        # Observations such as catch's (10, 5) board are flattened to vectors for the MLP encoder.
        super().__init__(FromDM(dmenv, flatten=True))

    @property
    def finished(self) -> bool:
        """Whether the configuration's prescribed number of episodes has been run."""
        return self.num_episodes >= self.max_episodes

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        obs = self.env.step(action)
        if obs["is_last"]:
            self.num_episodes += 1
        return obs


def _unwrap(env: Any) -> Any:
    while not hasattr(env, "bsuite_num_episodes") and hasattr(env, "_env"):
        env = env._env
    return env


def make(task: str, config: Any) -> Env:
    """``bsuite_<id>``, e.g. ``bsuite_catch/0``, with ``config.env.bsuite``."""
    settings = config.env.bsuite
    return standardize(BSuite(task, results_dir(config), overwrite=bool(settings.get("overwrite", False))))
