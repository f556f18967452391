"""benchmarks/throughput.py's count of FLOPs per update and its distance to the device's peak."""

from __future__ import annotations

import pytest

from dreamer_tf.harness.throughput import hardware_use, jax_flops

# The count always runs on JAX (in a subprocess here), whatever the session's backend.
pytestmark = pytest.mark.backend_independent


def flops(*overrides: str) -> float:
    return jax_flops(["debug"], list(overrides), vector_only=True)


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
