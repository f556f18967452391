"""DeepMind Control Suite through dm_control, for the proprio and vision benchmarks.

Task names are ``<domain>_<task>`` as in the published data (``walker_walk``,
``ball_in_cup_catch``, ``cartpole_balance_sparse``). ``config.env.dmc`` selects the
observations: ``proprio`` keeps the suite's vectors (each flattened to 1-D), ``image``
adds a 64x64 ``image`` rendered from ``camera`` (-1: the official per-domain default,
camera 2 for quadruped and 0 otherwise). With ``image`` false the official code still
renders every frame as ``log/image`` for videos; here that needs ``log_image`` true, because
software rendering (osmesa) costs 20-40 ms a frame, far more than the physics of a proprio
step. Actions are rescaled to [-1, 1].

MuJoCo's OpenGL backend is chosen before mujoco is imported: ``MUJOCO_GL=egl`` where
an NVIDIA GPU is visible and ``osmesa`` (software, ``apt-get install libosmesa6``)
otherwise, unless the user set ``MUJOCO_GL``.

OSMesa and TensorFlow cannot share a process naively: Mesa links the system LLVM and
TensorFlow carries its own. TensorFlow imported after OSMesa segfaults on import, and OSMesa
bound to TensorFlow's LLVM segfaults on the first context or aborts at exit. So before
dm_control loads, TensorFlow (when installed, whatever the Keras backend) is imported first and OSMesa is
then opened with ``RTLD_DEEPBIND``, which makes it prefer its own LLVM; PyOpenGL reuses it.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import importlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dreamer_tf.envs.base import Env
from dreamer_tf.envs.wrappers import ActionRepeat, FromDM, Wrapper, require, standardize
from dreamer_tf.spaces import Space

INSTALL = (
    "pip install dm-control==1.0.50 mujoco==3.17.0   (and apt-get install -y libosmesa6 for CPU rendering)"
)

DEFAULT_CAMERAS = {"quadruped": 2, "rodent": 4}

# Domains whose suite name contains an underscore, so "<domain>_<task>" is split after it.
MULTIWORD_DOMAINS = ("ball_in_cup", "point_mass")


def configure_mujoco_gl() -> str:
    """Set ``MUJOCO_GL`` (egl with an NVIDIA GPU, osmesa without) unless the user did; return it."""
    if "MUJOCO_GL" not in os.environ:
        gpu = shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")
        os.environ["MUJOCO_GL"] = "egl" if gpu else "osmesa"
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        # dm_control refuses a PyOpenGL platform other than MuJoCo's.
        os.environ["PYOPENGL_PLATFORM"] = os.environ["MUJOCO_GL"]
    if os.environ["MUJOCO_GL"] == "osmesa":
        isolate_osmesa()
    return os.environ["MUJOCO_GL"]


_OSMESA_LOADED = False


def isolate_osmesa() -> None:
    """Load TensorFlow, then OSMesa with its own LLVM (``RTLD_DEEPBIND``), once per process.

    Call before dm_control or PyOpenGL are imported. Environment worker processes that never
    import TensorFlow (``DREAMER_NO_TF=1``) skip the TensorFlow import.
    """
    global _OSMESA_LOADED
    if _OSMESA_LOADED or not hasattr(os, "RTLD_DEEPBIND"):
        return
    _OSMESA_LOADED = True
    # Whatever the Keras backend: TensorFlow loaded after OSMesa clashes with it, and anything in the
    # process may import it later (keras.utils.set_random_seed does whenever it is installed).
    if os.environ.get("DREAMER_NO_TF") != "1" and importlib.util.find_spec("tensorflow") is not None:
        importlib.import_module("tensorflow")
    with contextlib.suppress(OSError):  # no libosmesa6: dm_control reports it when it renders
        ctypes.CDLL("libOSMesa.so.8", mode=os.RTLD_DEEPBIND | os.RTLD_LOCAL)


def split_name(name: str) -> tuple[str, str]:
    """``"ball_in_cup_catch"`` -> ``("ball_in_cup", "catch")``; ``"cup_catch"`` is accepted too."""
    for domain in MULTIWORD_DOMAINS:
        if name.startswith(domain + "_"):
            return domain, name[len(domain) + 1 :]
    domain, task = name.split("_", 1)
    return ("ball_in_cup" if domain == "cup" else domain), task


def check(name: str) -> None:
    """Raise ``ValueError`` if dm_control has no task ``name`` (``dreamer_tf.envs.check_task``).

    Reads the suite's sources instead of importing it: importing dm_control loads MuJoCo and its
    renderer, which must wait until ``isolate_osmesa`` has run (see the module docstring).
    """
    try:
        spec = importlib.util.find_spec("dm_control")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: making the environment says what to install
    suite = Path(list(spec.submodule_search_locations)[0]) / "suite"
    domains = sorted(p.stem for p in suite.glob("*.py") if _suite_tasks(p))
    if "_" not in name:
        raise ValueError(f"dm_control tasks are named <domain>_<task>; domains: {', '.join(domains)}.")
    domain, task = split_name(name)
    path = suite / f"{domain}.py"
    tasks = _suite_tasks(path) if path.exists() else []
    if not tasks:
        raise ValueError(f"dm_control has no domain '{domain}'; domains: {', '.join(domains)}.")
    if task not in tasks:
        raise ValueError(f"dm_control's {domain} has the tasks {', '.join(tasks)}.")


def _suite_tasks(path: Path) -> list[str]:
    """The functions of a dm_control suite module registered with ``@SUITE.add``."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("SUITE.add" in ast.unparse(decorator) for decorator in node.decorator_list)
    ]


class _Suite(FromDM):
    """A control suite environment that saves its state mid-episode.

    The state is the task's random generator as it was when the episode began, MuJoCo's full
    integration state now (``mjSTATE_INTEGRATION``: time, positions, velocities, actuator state,
    controls, warm start, applied forces, mocap), the step count and the generator now. Restoring
    replays the episode's reset from the saved generator, which redoes whatever the task changed
    in the model at that reset (a target's position, colours), and then sets the integration
    state: the continued episode is bit for bit the one that was saved, a few KB per environment
    where pickling the physics takes about 0.7 MB compressed (mostly the skybox texture).
    """

    def __init__(self, env: Any, flatten: bool = True) -> None:
        super().__init__(env, flatten=flatten)
        self._episode_random: Any = None

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if action["reset"] or self._done:
            self._episode_random = self._env.task.random.get_state()
        return super().step(action)

    def _dm_state(self) -> dict[str, Any] | None:
        if self._episode_random is None:
            return None  # never reset: there is no episode to continue
        import mujoco

        physics = self._env.physics
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        integration = np.empty(mujoco.mj_stateSize(physics.model.ptr, spec), np.float64)
        mujoco.mj_getState(physics.model.ptr, physics.data.ptr, integration, spec)
        return {
            "episode_random": list(self._episode_random),
            "random": list(self._env.task.random.get_state()),
            "integration": integration,
            "step_count": int(self._env._step_count),
            "reset_next_step": bool(self._env._reset_next_step),
        }

    def _load_dm_state(self, state: dict[str, Any]) -> None:
        import mujoco

        env = self._env
        env.task.random.set_state(tuple(state["episode_random"]))
        self._episode_random = env.task.random.get_state()
        env.reset()
        physics = env.physics
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        integration = np.asarray(state["integration"], np.float64)
        expected = mujoco.mj_stateSize(physics.model.ptr, spec)
        if integration.shape != (expected,):
            raise ValueError(
                f"the saved MuJoCo state has {integration.size} numbers, this task's model needs {expected}"
            )
        mujoco.mj_setState(physics.model.ptr, physics.data.ptr, integration, spec)
        physics.forward()
        env._step_count = int(state["step_count"])
        env._reset_next_step = bool(state["reset_next_step"])
        env.task.random.set_state(tuple(state["random"]))


class DMC(Wrapper):
    """A control suite task with vector and/or rendered image observations."""

    def __init__(
        self,
        name: str,
        repeat: int = 1,
        size: tuple[int, int] = (64, 64),
        proprio: bool = True,
        image: bool = True,
        camera: int = -1,
        log_image: bool = False,
        seed: int | None = None,
    ) -> None:
        configure_mujoco_gl()
        suite = require("dm_control.suite", "dm-control", INSTALL)
        domain, task = split_name(name)
        if (domain, task) not in suite.ALL_TASKS:
            known = ", ".join(f"{d}_{t}" for d, t in suite.ALL_TASKS)
            raise ValueError(f"dm_control has no task '{name}'. Known: {known}")
        self._camera = DEFAULT_CAMERAS.get(domain, 0) if camera == -1 else camera
        self._dmenv = suite.load(domain, task, task_kwargs={"random": seed})
        env: Env = _Suite(self._dmenv, flatten=True)
        super().__init__(ActionRepeat(env, repeat) if repeat > 1 else env)
        self._size = tuple(int(x) for x in size)
        self._proprio = proprio
        self._image_key = "image" if image else ("log/image" if log_image else None)

    @property
    def obs_space(self) -> dict[str, Space]:
        spaces = self.env.obs_space
        if not self._proprio:
            spaces = {k: spaces[k] for k in ("reward", "is_first", "is_last", "is_terminal")}
        if self._image_key:
            spaces = {**spaces, self._image_key: Space(np.uint8, (*self._size, 3))}
        return spaces

    def step(self, action: dict[str, Any]) -> dict[str, np.ndarray]:
        if not action["reset"]:
            value = np.asarray(action["action"])
            assert np.isfinite(value).all(), f"non-finite action {value}"
        obs = self.env.step(action)
        if not self._proprio:
            obs = {k: obs[k] for k in ("reward", "is_first", "is_last", "is_terminal")}
        if self._image_key:
            height, width = self._size
            obs[self._image_key] = self._dmenv.physics.render(height, width, camera_id=self._camera)
        return obs

    def close(self) -> None:
        # Free the render context now rather than at interpreter exit, when dm_control's
        # executor is already shut down and prints errors.
        with contextlib.suppress(Exception):
            self._dmenv.physics.free()


def make(task: str, config: Any) -> Env:
    """``dmc_<domain>_<task>`` with ``config.env.dmc`` (the dmc_proprio / dmc_vision presets set it)."""
    settings = dict(config.env.dmc)
    settings["size"] = tuple(settings["size"])
    return standardize(DMC(task, **settings))
