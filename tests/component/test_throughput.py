"""benchmarks/throughput.py's count of FLOPs per update and its distance to the device's peak."""

from __future__ import annotations

import pytest

from dreamer_tf.harness.throughput import hardware_use, jax_flops

# The count always runs on JAX (in a subprocess here), whatever the session's backend.
pytestmark = pytest.mark.backend_independent


def flops(*overrides: str) -> float:
    return jax_flops(["debug"], list(overrides), workload="vector")


def test_the_count_scales_with_the_batch_and_counts_every_step_of_the_loops():
    base = flops("--batch_size", "4", "--batch_length", "8")
    assert base > 1e5
    # Almost everything in an update is per replayed step: the world model's (B, T) steps and the
    # imagination started from each of them. Twice the batch or twice the length: about twice the FLOPs
    # (a count that took each time loop's body once would not grow with the length).
    assert 1.8 < flops("--batch_size", "8", "--batch_length", "8") / base < 2.05
    assert 1.8 < flops("--batch_size", "4", "--batch_length", "16") / base < 2.05


def test_achieved_rate_and_the_known_peaks():
    cpu = hardware_use(2e9, 5.0, "cpu", "float32", None)
    assert cpu == {"flops_per_update": 2e9, "tflops_per_s": 0.01}  # no known peak for a CPU
    gpu = hardware_use(2e12, 100.0, "gpu:NVIDIA H100 80GB HBM3", "bfloat16", None)
    assert gpu["tflops_per_s"] == 200.0 and gpu["peak_tflops_per_s"] == 989.0
    assert gpu["utilisation"] == pytest.approx(200 / 989)
    given = hardware_use(1e12, 1.0, "cpu", "float32", 2.0)
    assert given["utilisation"] == 0.5


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_the_profile_of_an_update_names_its_loops_and_layers(tmp_path, backend):
    import json
    import os
    import subprocess
    import sys

    module = "dreamer_tf.harness.throughput"
    command = [
        sys.executable,
        "-m",
        module,
        "--backend",
        backend,
        "--configs",
        "debug",
        "--workload",
        "dmc_proprio",
    ]
    command += ["--updates", "1", "--policy-steps", "1", "--no-flops", "--json"]
    command += ["--profile", str(tmp_path)]
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    profile = json.loads(done.stdout.strip().splitlines()[-1])["profile"]
    assert profile["ms_per_update"] > 0
    loops = {row["part"]: row["ms"] for row in profile["by_loop"]}
    assert loops["a loop of 15 steps: imagination"] > 0  # the debug preset's imag_length
    layers = {row["part"] for row in profile["by_layer"]}
    assert any(name.startswith("dyn") for name in layers), sorted(layers)  # the GRU's layers
    # Rows under 0.05 ms are left out of the lists.
    assert sum(row["share"] for row in profile["by_loop"]) == pytest.approx(1, abs=0.03)


def test_a_second_jax_process_loads_its_train_step_from_the_compilation_cache(tmp_path):
    import json
    import os
    import subprocess
    import sys

    cache = tmp_path / "programs"
    flags = (
        "--backend jax --configs debug --workload dmc_proprio --updates 1 --policy-steps 1 --no-flops --json"
    )
    command = [sys.executable, "-m", "dreamer_tf.harness.throughput", *flags.split()]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def run(*extra: str) -> dict:
        done = subprocess.run(
            [*command, *extra], capture_output=True, text=True, env=env, timeout=600, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run("--compile.cache", str(cache))
    assert first["compile_cache"] == str(cache) and first["compile_cache_hits"] == 0
    assert any(path.name.startswith("jit__train_step") for path in cache.iterdir())
    second = run("--compile.cache", str(cache))
    assert second["compile_cache_hits"] >= 1
    # A benchmark compiles unless told to use a cache: its compile_s times a compilation.
    cold = run()
    assert cold["compile_cache"] is None and cold["compile_cache_hits"] == 0
