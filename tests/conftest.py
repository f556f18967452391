"""Shared test setup: pick the Keras backend before Keras is imported, and seed every test.

Choose the backend with ``KERAS_BACKEND=jax pytest ...``; the default is TensorFlow, the reference.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MUJOCO_GL", "osmesa")  # headless MuJoCo rendering on the CPU


# TensorFlow first, then OSMesa with its own LLVM: see isolate_osmesa in dreamer_tf/envs/dmc.py.
# Done here, before any test module imports TensorFlow or dm_control, so every order is safe.
from dreamer_tf.envs.dmc import isolate_osmesa  # noqa: E402

if os.environ["MUJOCO_GL"] == "osmesa":
    isolate_osmesa()

import keras  # after the environment above: Keras reads KERAS_BACKEND on import
import pytest

LEARNING_DIR = Path(__file__).parent / "learning"

# Test modules that never build a Keras model: environments, replay, checkpoints, the loop with fake
# agents, logging, config, the CLI with the random agent. They carry the `backend_independent` marker,
# and scripts/test.sh runs them once (on TensorFlow) instead of once per backend.
BACKEND_INDEPENDENT = ("test_envs_*.py", "test_replay.py", "test_checkpoint.py", "test_loop.py",
                       "test_metrics.py", "test_config.py", "test_cli.py")  # fmt: skip


def pytest_report_header(config: pytest.Config) -> str:
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/learning carries the `learning` marker, so `-m "not learning"` skips it.
    for item in items:
        path = Path(item.fspath)
        if LEARNING_DIR in path.parents:
            item.add_marker(pytest.mark.learning)
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in BACKEND_INDEPENDENT):
            item.add_marker(pytest.mark.backend_independent)


@pytest.fixture
def backend() -> str:
    """The active Keras backend name: ``"tensorflow"`` or ``"jax"``."""
    return keras.backend.backend()


@pytest.fixture(scope="session")
def seed() -> int:
    """The base random seed for the session (``DREAMER_TEST_SEED``, default 0)."""
    return int(os.environ.get("DREAMER_TEST_SEED", "0"))


@pytest.fixture(autouse=True)
def _seed_everything(seed: int) -> None:
    # Seeds Python, NumPy and the backend, so each test is reproducible on its own.
    keras.utils.set_random_seed(seed)
