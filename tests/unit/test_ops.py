"""symlog, symexp bins, twohot, symmetric expectation and λ-returns against plain numpy references."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from dreamer_tf.nn import ops as dops
from tests.helpers.autodiff import gradient


def to_numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def naive_twohot(target: float, bins: np.ndarray) -> np.ndarray:
    """Twohot encoding written as a plain loop over the bins."""
    weights = np.zeros(len(bins), np.float64)
    if target <= bins[0]:
        weights[0] = 1.0
        return weights
    if target >= bins[-1]:
        weights[-1] = 1.0
        return weights
    for k in range(len(bins) - 1):
        lo, hi = float(bins[k]), float(bins[k + 1])
        if lo <= target < hi:
            weights[k] = (hi - target) / (hi - lo)
            weights[k + 1] = (target - lo) / (hi - lo)
            return weights
    raise AssertionError(f"target {target} not bracketed")


def naive_lambda_return(last, term, rew, val, boot, disc, lam):
    """R_t = r_{t+1} + γ c_{t+1} ((1 − λ_{t+1}) boot_{t+1} + λ_{t+1} R_{t+1}), R_{T−1} = boot_{T−1}."""
    del val  # the official signature carries it but the recursion only uses boot
    N, T = rew.shape
    out = np.zeros((N, T - 1), np.float64)
    for n in range(N):
        ret = float(boot[n, T - 1])
        for t in reversed(range(T - 1)):
            live = disc * (1.0 - float(term[n, t + 1]))
            lam_next = lam * (1.0 - float(last[n, t + 1]))
            ret = rew[n, t + 1] + live * ((1.0 - lam_next) * boot[n, t + 1] + lam_next * ret)
            out[n, t] = ret
    return out


# ---------------------------------------------------------------- symlog / symexp

EXTREME = np.array(
    [-1e8, -3e4, -100.0, -2.5, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 7.0, 1e3, 5e5, 1e8], np.float32
)


def test_symlog_matches_sign_log1p():
    x = EXTREME
    expected = np.sign(x) * np.log1p(np.abs(x.astype(np.float64)))
    np.testing.assert_allclose(to_numpy(dops.symlog(x)), expected, rtol=1e-6, atol=1e-7)


def test_symexp_inverts_symlog_including_large_and_negative_values():
    x = EXTREME
    np.testing.assert_allclose(to_numpy(dops.symexp(dops.symlog(x))), x, rtol=1e-5, atol=1e-6)
    y = np.linspace(-20.0, 20.0, 101, dtype=np.float32)
    np.testing.assert_allclose(to_numpy(dops.symlog(dops.symexp(y))), y, rtol=1e-5, atol=1e-6)
    assert to_numpy(dops.symexp(np.float32(0.0))) == 0.0
    assert to_numpy(dops.symlog(np.float32(-3.0))) < 0


# ---------------------------------------------------------------- bins and twohot


def test_symexp_bins_are_exactly_symmetric():
    bins = dops.symexp_bins(255)
    assert bins.shape == (255,) and bins.dtype == np.float32
    np.testing.assert_array_equal(bins, -bins[::-1])
    assert bins[127] == 0.0
    assert np.all(np.diff(bins) > 0)
    np.testing.assert_allclose(bins[-1], np.expm1(20.0), rtol=1e-6)
    np.testing.assert_allclose(bins[0], -np.expm1(20.0), rtol=1e-6)
    # Every bin is symexp of the evenly spaced grid, up to float32 rounding.
    reference = np.sign(np.linspace(-20, 20, 255)) * np.expm1(np.abs(np.linspace(-20, 20, 255)))
    np.testing.assert_allclose(bins, reference, rtol=1e-5, atol=1e-6)


def test_symexp_bins_even_count_symmetric():
    bins = dops.symexp_bins(8)
    np.testing.assert_array_equal(bins, -bins[::-1])


TARGETS = np.array(
    [0.0, 1e-4, -1e-4, 0.3, -0.7, 1.0, -2.5, 13.0, -150.0, 3e3, -4e4, 1e6, -2.2e7, 4.5e8], np.float32
)


def test_twohot_matches_naive_loop_and_decodes_back():
    bins = dops.symexp_bins(255)
    encoded = to_numpy(dops.twohot(TARGETS, bins))
    assert encoded.shape == (len(TARGETS), 255)
    for target, row in zip(TARGETS, encoded):
        reference = naive_twohot(float(target), bins.astype(np.float64))
        np.testing.assert_allclose(row, reference, atol=2e-5, err_msg=f"target {target}")
        np.testing.assert_allclose(row.sum(), 1.0, rtol=1e-6)
        nonzero = np.flatnonzero(row)
        assert 1 <= len(nonzero) <= 2, (target, nonzero)
        if len(nonzero) == 2:
            assert nonzero[1] == nonzero[0] + 1, (target, nonzero)
        assert np.all(row >= 0)
        decoded = float(np.sum(row.astype(np.float64) * bins))
        np.testing.assert_allclose(decoded, float(target), rtol=1e-5, atol=1e-5)


def test_twohot_exact_bin_and_batch_shape():
    bins = dops.symexp_bins(255)
    target = np.stack([bins[[3, 127, 200]], bins[[0, 254, 128]]]).astype(np.float32)
    encoded = to_numpy(dops.twohot(target, bins))
    assert encoded.shape == (2, 3, 255)
    for index, k in np.ndenumerate(np.array([[3, 127, 200], [0, 254, 128]])):
        row = encoded[index]
        assert row[k] == pytest.approx(1.0) and row.sum() == pytest.approx(1.0), (index, k)


def test_twohot_beyond_the_edges_goes_to_outermost_bin():
    bins = dops.symexp_bins(255)
    encoded = to_numpy(dops.twohot(np.array([1e10, -1e10, np.float32(np.expm1(20.0)) * 2], np.float32), bins))
    assert encoded[0, -1] == 1.0 and encoded[0].sum() == 1.0
    assert encoded[1, 0] == 1.0 and encoded[1].sum() == 1.0
    assert encoded[2, -1] == 1.0 and encoded[2].sum() == 1.0


def test_twohot_small_bins_linear_weights():
    bins = np.array([-2.0, -1.0, 0.0, 1.0, 2.0], np.float32)
    encoded = to_numpy(dops.twohot(np.array([0.25, -1.5, 1.9], np.float32), bins))
    np.testing.assert_allclose(encoded[0], [0, 0, 0.75, 0.25, 0])
    np.testing.assert_allclose(encoded[1], [0.5, 0.5, 0, 0, 0])
    np.testing.assert_allclose(encoded[2], [0, 0, 0, 0.1, 0.9], atol=1e-6)


# ---------------------------------------------------------------- symmetric expectation


@pytest.mark.parametrize("num", [255, 5, 8])
def test_symmetric_expectation_equals_weighted_sum(num):
    bins = dops.symexp_bins(num)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, num)) * 3
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    result = to_numpy(dops.symmetric_expectation(probs, bins))
    expected = (probs.astype(np.float64) * bins.astype(np.float64)).sum(-1)
    scale = np.abs(probs * bins).max(-1)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=0)
    assert np.all(np.abs(result - expected) <= 1e-5 * scale + 1e-7), (result, expected)


@pytest.mark.parametrize("num", [255, 5, 8])
def test_symmetric_expectation_is_exactly_zero_for_uniform(num):
    bins = dops.symexp_bins(num)
    probs = ops.softmax(ops.zeros((3, num)), -1)
    assert np.all(to_numpy(dops.symmetric_expectation(probs, bins)) == 0.0)
    symmetric = np.random.default_rng(1).random((4, num)).astype(np.float32)
    symmetric = symmetric + symmetric[:, ::-1]
    assert np.all(to_numpy(dops.symmetric_expectation(symmetric, bins)) == 0.0)


# ---------------------------------------------------------------- λ-returns


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lambda_return_matches_naive_loop(seed):
    rng = np.random.default_rng(seed)
    N, T = 5, 12
    last = rng.random((N, T)) < 0.2
    term = last & (rng.random((N, T)) < 0.5)
    rew = rng.normal(size=(N, T)).astype(np.float32)
    val = rng.normal(size=(N, T)).astype(np.float32)
    boot = rng.normal(size=(N, T)).astype(np.float32)
    disc, lam = 0.97, 0.9
    result = to_numpy(dops.lambda_return(last, term, rew, val, boot, disc, lam))
    expected = naive_lambda_return(last, term, rew, val, boot, disc, lam)
    assert result.shape == (N, T - 1)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_lambda_return_special_cases():
    rng = np.random.default_rng(3)
    N, T = 3, 6
    rew = rng.normal(size=(N, T)).astype(np.float32)
    boot = rng.normal(size=(N, T)).astype(np.float32)
    zeros = np.zeros((N, T), bool)
    # λ = 0: one-step TD targets r_{t+1} + γ boot_{t+1}.
    td = to_numpy(dops.lambda_return(zeros, zeros, rew, boot, boot, 0.9, 0.0))
    np.testing.assert_allclose(td, rew[:, 1:] + 0.9 * boot[:, 1:], rtol=1e-6)
    # λ = 1 without episode ends: discounted reward sum bootstrapped at the end.
    mc = to_numpy(dops.lambda_return(zeros, zeros, rew, boot, boot, 0.9, 1.0))
    for t in range(T - 1):
        expected = (
            sum(0.9**k * rew[:, t + 1 + k] for k in range(T - 1 - t)) + 0.9 ** (T - 1 - t) * boot[:, -1]
        )
        np.testing.assert_allclose(mc[:, t], expected, rtol=1e-5)
    # A terminal step ends the return: nothing after it leaks back.
    term = zeros.copy()
    term[:, 3] = True
    cut = to_numpy(dops.lambda_return(term, term, rew, boot, boot, 0.9, 1.0))
    np.testing.assert_allclose(cut[:, 2], rew[:, 3], rtol=1e-6)


def test_masked_mean():
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    assert float(to_numpy(dops.masked_mean(x, np.array([1, 0, 1, 0])))) == pytest.approx(2.0)
    assert float(to_numpy(dops.masked_mean(x, np.zeros(4)))) == 0.0


@pytest.mark.parametrize("parts", [1, 3])
def test_block_linear_matches_a_dense_map_per_block(parts):
    from dreamer_tf.nn.nets import BlockLinear

    rng = np.random.default_rng(0)
    layer = BlockLinear(12, 6 * parts, 3)
    x = rng.normal(size=(5, 12)).astype(np.float32)
    layer.build((5, 12))
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32))
    kernel, bias = np.asarray(layer.kernel), np.asarray(layer.bias)
    # Block k maps x's slice k with kernel[k]; its outputs are [group 0 | ... | group parts-1].
    full = np.concatenate([x[:, 4 * k : 4 * k + 4] @ kernel[k] for k in range(3)], -1) + bias
    groups = full.reshape(5, 3, parts, -1)
    out = layer(x, parts=parts) if parts > 1 else [layer(x)]
    for j, got in enumerate(out):
        np.testing.assert_allclose(np.asarray(got), groups[:, :, j].reshape(5, -1), rtol=1e-5, atol=1e-5)


def test_block_linear_with_shared_inputs_equals_the_layer_on_the_built_inputs():
    from dreamer_tf.nn.nets import BlockLinear

    rng = np.random.default_rng(1)
    blocks, own_width, shared_width = 4, 3, 5
    layer = BlockLinear(blocks * (own_width + shared_width), 8, blocks)
    layer.build((None, blocks * (own_width + shared_width)))
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32))
    own = rng.normal(size=(6, blocks * own_width)).astype(np.float32)
    shared = rng.normal(size=(6, shared_width)).astype(np.float32)
    built = np.concatenate(
        [np.concatenate([own[:, own_width * k : own_width * (k + 1)], shared], -1) for k in range(blocks)], -1
    )
    np.testing.assert_allclose(
        np.asarray(layer(own, shared=shared)), np.asarray(layer(built)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_conv_on_the_upsampled_input_equals_the_conv_of_the_upsampled_input(kernel):
    from dreamer_tf.nn.nets import Conv2D

    rng = np.random.default_rng(kernel)
    layer = Conv2D(3, 4, kernel)
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    layer.build(x.shape)
    layer.bias.assign(rng.normal(size=(4,)).astype(np.float32))
    upsampled = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)  # 2× nearest neighbour
    expected = np.asarray(layer(upsampled))
    assert expected.shape == (2, 12, 10, 4)
    np.testing.assert_allclose(np.asarray(layer(x, upsampled=True)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("values", ["ties", "normal"])
def test_the_pool_is_the_max_of_the_biased_windows_and_splits_its_gradient_between_tied_maxima(values):
    from dreamer_tf.nn.nets import max_pool2

    rng = np.random.default_rng(0)
    # Three levels make windows with two, three and four tied maxima.
    x = rng.integers(0, 3, (3, 6, 4, 5)) if values == "ties" else rng.normal(size=(3, 6, 4, 5))
    bias = rng.integers(-2, 3, (5,)) if values == "ties" else rng.normal(size=(5,))
    x, bias = x.astype(np.float32), bias.astype(np.float32)
    weight = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    windows = np.reshape(x + bias, (3, 3, 2, 2, 2, 5))
    top = windows.max((2, 4))
    at_max = windows == top[:, :, None, :, None]
    count = at_max.sum((2, 4)).astype(np.float32)
    if values == "ties":
        assert {2, 3, 4} <= set(count.ravel().tolist())
    # The official code's rule (JAX's for max): the upstream gradient divided by the count, at each maximum.
    share = weight / count
    expected_x = np.where(at_max, share[:, :, None, :, None], 0.0).reshape(x.shape)

    np.testing.assert_array_equal(to_numpy(max_pool2(x, bias)), top)
    grad_x = gradient(lambda x: ops.sum(weight * max_pool2(x, bias)), x)
    grad_bias = gradient(lambda bias: ops.sum(weight * max_pool2(x, bias)), bias)
    if keras.backend.backend() == "jax":
        np.testing.assert_array_equal(grad_x, expected_x)
    else:  # TensorFlow's own rule multiplies by the reciprocal of the count: a rounding apart at ties of 3
        np.testing.assert_allclose(grad_x, expected_x, rtol=1e-6, atol=0)
    np.testing.assert_allclose(grad_bias, expected_x.sum((0, 1, 2)), rtol=1e-6, atol=1e-6)
