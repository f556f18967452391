"""LaProp (AGC → RMS scaling → momentum, with warmup) against a numpy reference, on both backends."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dreamer_tf.config import load_config
from dreamer_tf.dreamerv3.optim import LaProp, Warmup, make_optimizer


def reference(params, grads_per_step, lr, warmup, agc, pmin, beta1, beta2, eps, order):
    """Plain numpy (float64) implementation of the update rule in ``dreamer_tf/dreamerv3/optim.py``'s docstring."""
    params = [np.asarray(p, np.float64).copy() for p in params]
    mu = [np.zeros_like(p) for p in params]
    nu = [np.zeros_like(p) for p in params]
    history = []
    for t, grads in enumerate(grads_per_step, start=1):
        lr_t = lr * min(1.0, (t - 1) / warmup) if warmup else lr
        for i, (p, g) in enumerate(zip(params, grads)):
            g = np.asarray(g, np.float64)
            if agc:
                upper = agc * max(pmin, np.linalg.norm(p))
                g = g / max(1.0, np.linalg.norm(g) / upper)
            nu[i] = beta2 * nu[i] + (1 - beta2) * g**2
            if order == "laprop":
                u = g / (np.sqrt(nu[i] / (1 - beta2**t)) + eps)
                mu[i] = beta1 * mu[i] + (1 - beta1) * u
                update = mu[i] / (1 - beta1**t)
            else:
                mu[i] = beta1 * mu[i] + (1 - beta1) * g
                update = (mu[i] / (1 - beta1**t)) / (np.sqrt(nu[i] / (1 - beta2**t)) + eps)
            params[i] = p - lr_t * update
        history.append([p.copy() for p in params])
    return history


def as_float(x) -> float:
    return float(np.asarray(keras.ops.convert_to_numpy(x)))


def variable_value(variable) -> np.ndarray:
    if keras.backend.backend() == "jax":
        return np.asarray(variable.value)
    return variable.numpy()


def run(optimizer, params, grads_per_step):
    variables = [keras.Variable(p, dtype="float32") for p in params]
    history = []
    for grads in grads_per_step:
        optimizer.apply([keras.ops.convert_to_tensor(g, "float32") for g in grads], variables)
        history.append([variable_value(v) for v in variables])
    return history


def make_problem(grad_scale: float, steps: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=(3, 4)).astype(np.float32), np.zeros(4, np.float32)]
    grads = [
        [(rng.normal(size=p.shape) * grad_scale).astype(np.float32) for p in params] for _ in range(steps)
    ]
    return params, grads


CASES = {
    # AGC clips every step: gradients far larger than 0.3 · ‖θ‖ (and than 0.3 · pmin for the zero bias).
    "agc_active": {"grad_scale": 10.0, "agc": 0.3, "order": "laprop", "warmup": 3},
    # AGC never triggers: tiny gradients.
    "agc_inactive": {"grad_scale": 1e-5, "agc": 0.3, "order": "laprop", "warmup": 3},
    "agc_off": {"grad_scale": 10.0, "agc": 0.0, "order": "laprop", "warmup": 0},
    "adam_order": {"grad_scale": 10.0, "agc": 0.3, "order": "adam", "warmup": 2},
    "adam_no_agc": {"grad_scale": 1.0, "agc": 0.0, "order": "adam", "warmup": 0},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_laprop_matches_numpy_reference(case):
    spec = CASES[case]
    params, grads = make_problem(spec["grad_scale"])
    hyper = {
        "lr": 0.05,
        "warmup": spec["warmup"],
        "agc": spec["agc"],
        "pmin": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-20,
    }
    optimizer = LaProp(
        learning_rate=hyper["lr"], agc=hyper["agc"], pmin=hyper["pmin"], beta1=hyper["beta1"],
        beta2=hyper["beta2"], epsilon=hyper["eps"], warmup=hyper["warmup"], order=spec["order"],
    )  # fmt: skip
    actual = run(optimizer, params, grads)
    expected = reference(params, grads, order=spec["order"], **hyper)
    for step, (got, want) in enumerate(zip(actual, expected), start=1):
        for index, (g, w) in enumerate(zip(got, want)):
            np.testing.assert_allclose(
                g, w, rtol=2e-5, atol=2e-6, err_msg=f"{case} step {step} variable {index}"
            )
    assert float(variable_value(optimizer.iterations)) == len(grads)
    if spec["warmup"]:
        # The first update has learning rate 0: parameters are untouched.
        for got, initial in zip(actual[0], params):
            np.testing.assert_array_equal(got, initial)
    else:
        assert not np.allclose(actual[0][0], params[0])


def test_agc_cases_really_differ():
    """Guard for the parametrisation above: clipping must change the result when active."""
    params, grads = make_problem(10.0)
    hyper = {
        "lr": 0.05,
        "warmup": 0,
        "pmin": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-20,
        "order": "adam",
    }
    clipped = reference(params, grads, agc=0.3, **hyper)[-1]
    unclipped = reference(params, grads, agc=0.0, **hyper)[-1]
    assert not np.allclose(clipped[0], unclipped[0])


def test_warmup_ramps_learning_rate_linearly():
    schedule = Warmup(1.0, 4)
    values = [as_float(schedule(step)) for step in range(7)]
    assert values == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert as_float(Warmup(0.5, 0)(0)) == 0.5
    optimizer = LaProp(learning_rate=1.0, warmup=4)
    assert as_float(optimizer.learning_rate) == 0.0  # evaluated at iterations = 0


def test_unknown_order_raises():
    with pytest.raises(ValueError, match="sgd"):
        LaProp(order="sgd")


def test_make_optimizer_from_config():
    opt = load_config().agent.opt
    optimizer = make_optimizer(opt)
    assert isinstance(optimizer, LaProp)
    assert (optimizer.agc, optimizer.pmin, optimizer.beta1, optimizer.beta2) == (0.3, 1e-3, 0.9, 0.999)
    assert optimizer.epsilon == 1e-20 and optimizer.order == "laprop"
    assert as_float(optimizer._learning_rate(10**6)) == pytest.approx(4e-5)
    scaled = make_optimizer(opt, loss_scale=True)
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    adam = make_optimizer(load_config(["abl_adam"]).agent.opt)
    assert adam.order == "adam"


def test_learning_rate_multiplier_scales_only_the_named_variables():
    # LaProp's update is invariant to the gradient's scale, so a multiplier m moves a variable by
    # exactly m times the distance it moves without one; other variables are unaffected.
    params, grads = make_problem(1e-5)
    hyper = {"learning_rate": 0.05, "agc": 0.0, "warmup": 0}
    plain = run(LaProp(**hyper), params, grads)
    variables = [keras.Variable(p, dtype="float32", name=f"v{i}") for i, p in enumerate(params)]
    optimizer = LaProp(multipliers=[(variables[0], 0.25)], **hyper)
    for step in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g, "float32") for g in step], variables)
    np.testing.assert_allclose(
        variable_value(variables[0]) - params[0], 0.25 * (plain[-1][0] - params[0]), rtol=1e-4, atol=1e-7
    )
    np.testing.assert_allclose(variable_value(variables[1]), plain[-1][1], rtol=1e-6, atol=1e-7)
