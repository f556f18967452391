"""Shared test setup: pick the Keras backend before Keras is imported, and seed every test.

Choose the backend with ``KERAS_BACKEND=jax pytest ...``; the default is TensorFlow, the reference.
"""

from __future__ import annotations

import os

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

from dreamer_tf import backend as dreamer_backend


def pytest_report_header(config: pytest.Config) -> str:
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The longest tests first (learning, then slow), the rest in file order. Under pytest-xdist
    # (scripts/test.sh: --dist load --maxschedchunk 1) each worker starts on one of the long ones and
    # the short ones fill in around them, instead of a long test starting last and running alone.
    def rank(item: pytest.Item) -> int:
        return 0 if item.get_closest_marker("learning") else 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: file and definition order within each rank


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
    dreamer_backend.set_seed(seed)
