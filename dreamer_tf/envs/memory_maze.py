"""Memory Maze (Pasukonis et al. 2022), a runnable 3D memory domain in the spirit of DMLab.

Tasks ``memory_maze_9x9``, ``_11x11``, ``_13x13``, ``_15x15``: the agent sees a 64x64
egocentric image and chooses among 6 discrete actions; episodes last 1000, 2000, 3000
and 4000 steps (the package's time limits, truncations). The target colour is drawn
into the image (the package's ``MemoryMaze-<size>-v0`` setting, which the official
DreamerV3 code uses). ``config.env.memory_maze.length`` > 0 cuts episodes shorter.
Rendering uses MuJoCo like DMC, so ``MUJOCO_GL`` is chosen the same way.
"""

from __future__ import annotations

from typing import Any

from dreamer_tf.envs.base import Env
from dreamer_tf.envs.dmc import configure_mujoco_gl
from dreamer_tf.envs.wrappers import FromDM, TimeLimit, Wrapper, require, standardize

INSTALL = "pip install --no-deps memory-maze==1.0.3   (needs dm-control==1.0.50 and mujoco==3.17.0)"

SIZES = ("9x9", "11x11", "13x13", "15x15")


class MemoryMaze(Wrapper):
    """One maze size, image observations only."""

    def __init__(self, size: str, length: int = 0, seed: int | None = None) -> None:
        if size not in SIZES:
            raise ValueError(f"Unknown Memory Maze size '{size}'. Sizes: {', '.join(SIZES)}")
        configure_mujoco_gl()
        tasks = require("memory_maze.tasks", "memory-maze", INSTALL)
        dmenv = getattr(tasks, f"memory_maze_{size}")(image_only_obs=True, seed=seed)
        # With image_only_obs the dm_env observation is the bare image array.
        env: Env = FromDM(dmenv, obs_key="image")
        super().__init__(TimeLimit(env, length) if length else env)


def check(task: str) -> None:
    """Raise ``ValueError`` if ``task`` is not a Memory Maze size (``dreamer_tf.envs.check_task``)."""
    if task not in SIZES:
        raise ValueError(f"Memory Maze has the sizes {', '.join(SIZES)}.")


def make(task: str, config: Any) -> Env:
    """``memory_maze_<size>`` with ``config.env.memory_maze``."""
    settings = config.env.memory_maze
    size = tuple(settings.size)
    if size != (64, 64):
        raise ValueError(f"memory_maze renders 64x64 images; env.memory_maze.size is {list(size)}")
    return standardize(MemoryMaze(task, length=int(settings.get("length", 0))))
