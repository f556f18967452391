"""One update split over two devices equals the one-device update with the same global batch.

``compile.devices`` on both backends, each in a subprocess with two virtual CPU devices (JAX:
``--xla_force_host_platform_device_count=2``; TensorFlow: two logical CPU devices and a
``MirroredStrategy``): two copies of one agent train, on one device and split over both, from the
same weights on the same batches, and losses and weights are compared.

The agents predict rewards and values by MSE (the ``abl_mse_*`` presets), not symexp twohot: a
twohot prediction Σ p_j·b_j at near-uniform probabilities is float32 rounding noise, since its outer
bins are ±4.9e8 and one ulp of a probability moves it by whole units (≈7 with the debug preset's 5
bins). Splitting the batch changes the per-device shapes and so the rounding of every matmul and
softmax (as does calling one device with half the batch), and the noise differs. The world-model
and actor-critic computations themselves agree to float rounding, which is what this test checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamer_tf import backend

# Its subprocesses run each backend, whatever the session's: one run per CI is enough.
pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = {
    "jax": "import jax; assert len(jax.devices()) == 2, jax.devices()\n",
    "tensorflow": (
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
    ),
}

SCRIPT = """
import json, sys
import numpy as np
from tests.component.test_agent import OBS_SPACES, ACT_SPACES, make_batch
from dreamer_tf import backend
from dreamer_tf.config import ConfigError, load_config
from dreamer_tf.dreamerv3.agent import Agent
from dreamer_tf.ppo.agent import Agent as PPOAgent

presets = ["debug", "abl_mse_reward", "abl_mse_critic"]
flags = ["--batch_size", "8", "--agent.opt.warmup", "0", "--agent.opt.lr", "1e-3"]
agents = [
    Agent(OBS_SPACES["mixed"], ACT_SPACES["mixed"], load_config(presets, ["--compile.devices", str(n), *flags]))
    for n in (1, 2)
]
values = lambda agent: [np.asarray(v.value) for v in agent.model.trainable_variables]
start = values(agents[0])
assert all(np.array_equal(a, b) for a, b in zip(start, values(agents[1])))  # one seed, one start
# Three updates, without warm-up and at a larger learning rate, so that the weights move clearly;
# from the second on, the reward and value heads no longer predict zero and the actor's
# advantages depend on them.
metrics = [[agent.train(make_batch(agents[0], seed))[0] for agent in agents] for seed in (0, 1, 2)]
for agent in agents:
    agent.runner.sync()
one, two = values(agents[0]), values(agents[1])
out = {
    "devices": [agent.runner.device_count for agent in agents],
    "state_devices": (
        len(agents[1].runner.state[0][0].sharding.device_set) if backend.backend() == "jax"
        else len(agents[1].model.trainable_variables[0].value.values)
    ),
    "losses": {
        f"{k} update {i}": [m[k] for m in pair]
        for i, pair in enumerate(metrics) for k in pair[0] if k.startswith("loss/")
    },
    "moved": max(float(np.abs(a - b).max()) for a, b in zip(one, start)),
    "weights": max(float(np.abs(a - b).max() / (np.abs(a).max() + 1e-8)) for a, b in zip(one, two)),
}
if backend.backend() == "tensorflow":
    try:
        PPOAgent(OBS_SPACES["mixed"], ACT_SPACES["mixed"], load_config(["debug"], ["--compile.devices", "2"]))
    except ConfigError as error:
        out["ppo"] = str(error)
json.dump(out, sys.stdout)
"""


@pytest.mark.parametrize("name", ["jax", "tensorflow"])
def test_two_devices_give_the_one_device_update(name):
    env = {**os.environ, "KERAS_BACKEND": name, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE[name] + SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["devices"] == [1, 2] and out["state_devices"] == 2
    keys = {
        f"{k} update {i}" for k in ("loss/dyn", "loss/rep", "loss/policy", "loss/value") for i in range(3)
    }
    assert set(out["losses"]) >= keys, sorted(out["losses"])
    for key, (single, split) in out["losses"].items():
        assert split == pytest.approx(single, rel=1e-4, abs=1e-6), key
    assert out["moved"] > 1e-4  # the update changed the weights ...
    assert out["weights"] < 1e-4  # ... the same way on one device and on two
    if name == "tensorflow":
        assert "compile.devices 2: PPO trains on one device on TensorFlow" in out["ppo"]


@pytest.mark.skipif(backend.backend() != "tensorflow", reason="TensorFlow's logical devices")
def test_more_devices_than_visible_is_one_line():
    from dreamer_tf.config import ConfigError, load_config
    from tests.component.test_agent import make_agent

    with pytest.raises(ConfigError, match=r"compile.devices 3: 1 CPU device\(s\) are visible"):
        make_agent("vector", "--compile.devices", "3")
    # 0 means every visible device: one here, so no strategy.
    assert backend.make_strategy(load_config(["debug"], ["--compile.devices", "0"]).compile) is None
