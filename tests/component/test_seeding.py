"""The agent's seeding: Keras' global seed without TensorFlow in a JAX process.

``keras.utils.set_random_seed`` imports TensorFlow whenever it is installed (to seed it too);
``dreamer_tf.backend.set_seed`` does the same seeding without it on the JAX backend, so a JAX agent
does not carry TensorFlow's import time and memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.backend_independent  # its subprocess runs JAX, whatever the session's

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import random, sys
import numpy as np
from dreamer_tf import backend
from dreamer_tf.config import load_config
from dreamer_tf.dreamerv3.agent import Agent
from dreamer_tf.spaces import Space
import keras

def draws():
    return (random.random(), float(np.random.rand()), keras.ops.convert_to_numpy(keras.random.normal((4,))).tolist())

obs = {"vector": Space(np.float32, (3,)), "reward": Space(np.float32), "is_first": Space(bool),
       "is_last": Space(bool), "is_terminal": Space(bool)}
agent = Agent(obs, {"action": Space(np.int32, (), 0, 3)}, load_config(["debug"], ["--seed", "3"]))
weights = [keras.ops.convert_to_numpy(v.value) for v in agent.model.weights]
assert "tensorflow" not in sys.modules, "building a JAX agent imported TensorFlow"
backend.set_seed(3)
mine = draws()
again = Agent(obs, {"action": Space(np.int32, (), 0, 3)}, load_config(["debug"], ["--seed", "3"]))
same = all(np.array_equal(a, keras.ops.convert_to_numpy(b.value)) for a, b in zip(weights, again.model.weights))
assert same, "the same seed built different weights"
assert "tensorflow" not in sys.modules
keras.utils.set_random_seed(3)  # Keras' own (imports TensorFlow): the same draws
assert draws() == mine, (draws, mine)
print("ok")
"""


def test_a_jax_agent_is_seeded_without_importing_tensorflow():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
