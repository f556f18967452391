"""Output distributions and the RSSM's KL losses against tensorflow-probability and numpy references."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow_probability.substrates.numpy as tfp
from keras import ops

from dreamer_tf.dreamerv3.rssm import RSSM
from dreamer_tf.nn import distributions as dists
from dreamer_tf.nn import ops as dops
from tests.helpers.autodiff import gradient

tfd = tfp.distributions


def to_numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def unimix_probs(logits: np.ndarray, unimix: float) -> np.ndarray:
    return (1.0 - unimix) * softmax(logits.astype(np.float64)) + unimix / logits.shape[-1]


def naive_twohot(target: float, bins: np.ndarray) -> np.ndarray:
    """Weights on the two bins around ``target``, linear in the distance; all on an edge bin outside."""
    weights = np.zeros(len(bins))
    if target <= bins[0] or target >= bins[-1]:
        weights[0 if target <= bins[0] else -1] = 1.0
        return weights
    k = int(np.searchsorted(bins, target, side="right")) - 1
    weights[k] = (bins[k + 1] - target) / (bins[k + 1] - bins[k])
    weights[k + 1] = 1.0 - weights[k]
    return weights


RNG = np.random.default_rng(0)
LOGITS = (RNG.normal(size=(4, 3, 6)) * 2.5).astype(np.float32)
OTHER = (RNG.normal(size=(4, 3, 6)) * 2.5).astype(np.float32)


# ---------------------------------------------------------------- Categorical


@pytest.mark.parametrize("unimix", [0.0, 0.01])
def test_categorical_probs_with_unimix(unimix):
    dist = dists.Categorical(LOGITS, unimix)
    probs = to_numpy(dist.probs)
    np.testing.assert_allclose(probs, unimix_probs(LOGITS, unimix), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    if unimix:
        # Every class keeps at least unimix / K of the mass, however peaked the logits.
        peaked = dists.Categorical(np.array([[100.0, -100.0, -100.0, -100.0]], np.float32), unimix)
        np.testing.assert_allclose(to_numpy(peaked.probs)[0, 1:], unimix / 4, rtol=1e-5)
        np.testing.assert_allclose(to_numpy(peaked.probs)[0, 0], 1 - unimix + unimix / 4, rtol=1e-6)


@pytest.mark.parametrize("unimix", [0.0, 0.01])
def test_categorical_log_prob_entropy_kl_match_tfp(unimix):
    dist, other = dists.Categorical(LOGITS, unimix), dists.Categorical(OTHER, unimix)
    ref = tfd.Categorical(probs=unimix_probs(LOGITS, unimix))
    ref_other = tfd.Categorical(probs=unimix_probs(OTHER, unimix))
    index = RNG.integers(0, 6, size=(4, 3))
    np.testing.assert_allclose(to_numpy(dist.log_prob(index)), ref.log_prob(index), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(dist.entropy()), ref.entropy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(dist.kl(other)), tfd.kl_divergence(ref, ref_other), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_array_equal(to_numpy(dist.mode()), np.argmax(LOGITS, -1))
    assert dist.max_entropy == pytest.approx(np.log(6)) and dist.min_entropy == 0.0


def test_categorical_gumbel_sampling_frequencies():
    logits = np.array([1.0, 0.0, -1.0, 2.0, -3.0], np.float32)
    n = 40000
    noise = np.random.default_rng(1).gumbel(size=(n, 5)).astype(np.float32)
    dist = dists.Categorical(np.broadcast_to(logits, (n, 5)), unimix=0.01)
    samples = to_numpy(dist.sample(noise))
    counts = np.bincount(samples, minlength=5)
    expected = unimix_probs(logits, 0.01) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5, (chi2, counts, expected)  # chi-square 4 dof, p = 0.9996


def test_gumbel_helper_draws_standard_gumbel():
    seed = keras.random.SeedGenerator(3)
    noise = to_numpy(dists.gumbel((20000, 4), seed))
    assert noise.shape == (20000, 4) and np.all(np.isfinite(noise))
    assert noise.mean() == pytest.approx(np.euler_gamma, abs=0.03)
    assert noise.var() == pytest.approx(np.pi**2 / 6, rel=0.05)
    # argmax(logits + noise) samples softmax(logits).
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    counts = np.bincount(np.argmax(logits + noise, -1), minlength=4) / 20000
    np.testing.assert_allclose(counts, [0.1, 0.2, 0.3, 0.4], atol=0.015)


# ---------------------------------------------------------------- OneHot


@pytest.mark.parametrize("unimix", [0.0, 0.01])
def test_onehot_sample_value_and_straight_through_gradient(unimix):
    logits = LOGITS[0]  # (3, 6)
    noise = np.random.default_rng(2).gumbel(size=logits.shape).astype(np.float32)
    weights = np.random.default_rng(3).normal(size=logits.shape).astype(np.float32)
    sample = to_numpy(dists.OneHot(logits, unimix).sample(noise))
    expected_index = np.argmax(np.log(unimix_probs(logits, unimix)) + noise, -1)
    np.testing.assert_allclose(sample, np.eye(6)[expected_index], atol=1e-6)

    grad_sample = gradient(lambda x: ops.sum(dists.OneHot(x, unimix).sample(noise) * weights), logits)
    grad_probs = gradient(lambda x: ops.sum(dists.OneHot(x, unimix).probs * weights), logits)
    # Analytic d/dlogits Σ w·p with p = (1 − u) softmax + u / K.
    s = softmax(logits.astype(np.float64))
    analytic = (1 - unimix) * s * (weights - (s * weights).sum(-1, keepdims=True))
    np.testing.assert_allclose(grad_sample, grad_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_sample, analytic, rtol=1e-4, atol=1e-6)
    assert np.abs(grad_sample).max() > 1e-3


def test_onehot_mode_and_log_prob():
    dist = dists.OneHot(LOGITS, 0.01)
    np.testing.assert_allclose(to_numpy(dist.mode()), np.eye(6)[np.argmax(LOGITS, -1)], atol=1e-6)
    onehot = np.eye(6, dtype=np.float32)[RNG.integers(0, 6, (4, 3))]
    ref = tfd.Categorical(probs=unimix_probs(LOGITS, 0.01)).log_prob(onehot.argmax(-1))
    np.testing.assert_allclose(to_numpy(dist.log_prob(onehot)), ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- BoundedNormal


def test_bounded_normal_matches_tfp():
    mean = (RNG.normal(size=(5, 3)) * 2).astype(np.float32)
    rawstd = (RNG.normal(size=(5, 3)) * 2).astype(np.float32)
    x = RNG.uniform(-1, 1, size=(5, 3)).astype(np.float32)
    minstd, maxstd = 0.1, 1.0
    dist = dists.BoundedNormal(mean, rawstd, minstd, maxstd)
    std = (maxstd - minstd) / (1 + np.exp(-(rawstd.astype(np.float64) + 2.0))) + minstd
    np.testing.assert_allclose(to_numpy(dist.std), std, rtol=1e-5)
    assert np.all(to_numpy(dist.std) >= minstd) and np.all(to_numpy(dist.std) <= maxstd)
    ref = tfd.Independent(tfd.Normal(np.tanh(mean.astype(np.float64)), std), 1)
    np.testing.assert_allclose(to_numpy(dist.log_prob(x)), ref.log_prob(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(dist.entropy()), ref.entropy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(dist.mode()), np.tanh(mean), rtol=1e-6)
    noise = RNG.normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        to_numpy(dist.sample(noise)), np.tanh(mean) + std * noise, rtol=1e-5, atol=1e-6
    )
    low = tfd.Independent(tfd.Normal(np.zeros(3), np.full(3, minstd)), 1).entropy()
    high = tfd.Independent(tfd.Normal(np.zeros(3), np.full(3, maxstd)), 1).entropy()
    assert dist.min_entropy == pytest.approx(low) and dist.max_entropy == pytest.approx(high)


# ---------------------------------------------------------------- Bernoulli, MSE, TwoHot


def test_bernoulli_log_prob_with_soft_targets():
    logit = np.array([-30.0, -2.0, -0.1, 0.0, 0.7, 3.0, 40.0], np.float32)
    target = np.array([0.0, 0.3, 1.0, 0.5, 0.997, 1.0, 0.2], np.float32)
    dist = dists.Bernoulli(logit)
    logsig = lambda z: -np.logaddexp(0.0, -z.astype(np.float64))
    expected = target * logsig(logit) + (1 - target) * logsig(-logit)
    result = to_numpy(dist.log_prob(target))
    assert np.all(np.isfinite(result))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(dist.loss(target)), -expected, rtol=1e-5, atol=1e-6)
    hard = np.array([0, 1, 1, 0, 1, 1, 0], np.float32)
    np.testing.assert_allclose(
        to_numpy(dist.log_prob(hard)), tfd.Bernoulli(logits=logit).log_prob(hard), rtol=1e-5
    )
    np.testing.assert_allclose(to_numpy(dist.prob()), 1 / (1 + np.exp(-logit.astype(np.float64))), rtol=1e-6)


@pytest.mark.parametrize("symlog", [False, True])
def test_mse_loss_and_prediction(symlog):
    pred = RNG.normal(size=(4, 3)).astype(np.float32)
    target = (RNG.normal(size=(4, 3)) * 50).astype(np.float32)
    dist = dists.MSE(pred, symlog=symlog)
    space = np.sign(target) * np.log1p(np.abs(target)) if symlog else target
    np.testing.assert_allclose(to_numpy(dist.loss(target)), (pred - space) ** 2, rtol=1e-5)
    decoded = np.sign(pred) * np.expm1(np.abs(pred)) if symlog else pred
    np.testing.assert_allclose(to_numpy(dist.pred()), decoded, rtol=1e-5)


def test_twohot_loss_is_cross_entropy_with_twohot_target():
    bins = dops.symexp_bins(255)
    logits = RNG.normal(size=(6, 255)).astype(np.float32)
    target = np.array([0.0, -3.2, 17.0, 1e4, -2e6, 1e12], np.float32)
    dist = dists.TwoHot(logits, bins)
    logp = np.log(softmax(logits.astype(np.float64)))
    expected = np.array(
        [-(naive_twohot(float(t), bins.astype(np.float64)) * lp).sum() for t, lp in zip(target, logp)]
    )
    np.testing.assert_allclose(to_numpy(dist.loss(target)), expected, rtol=1e-5, atol=1e-5)
    pred = (softmax(logits.astype(np.float64)) * bins).sum(-1)
    np.testing.assert_allclose(to_numpy(dist.pred()), pred, rtol=1e-4, atol=1e-2)
    zero = dists.TwoHot(np.zeros((3, 255), np.float32), bins)
    assert np.all(to_numpy(zero.pred()) == 0.0)


def test_twohot_loss_does_not_backprop_into_target():
    bins = dops.symexp_bins(5)
    logits = RNG.normal(size=(3, 5)).astype(np.float32)
    target = np.array([0.5, -2.0, 3.0], np.float32)
    grad = gradient(lambda t: ops.sum(dists.TwoHot(logits, bins).loss(t)), target)
    np.testing.assert_array_equal(grad, 0.0)


# ---------------------------------------------------------------- RSSM KL losses


def make_rssm(free_nats: float, unimix: float = 0.01) -> RSSM:
    return RSSM(
        action_size=2, token_size=4, deter=8, hidden=4, stoch=3, classes=5, act="silu", norm="rms",
        unimix=unimix, outscale=1.0, imglayers=1, obslayers=1, dynlayers=1, blocks=2, free_nats=free_nats,
    )  # fmt: skip


def reference_kl(post_logits: np.ndarray, prior_logits: np.ndarray, unimix: float) -> np.ndarray:
    post = tfd.Independent(tfd.Categorical(probs=unimix_probs(post_logits, unimix)), 1)
    prior = tfd.Independent(tfd.Categorical(probs=unimix_probs(prior_logits, unimix)), 1)
    return tfd.kl_divergence(post, prior)


@pytest.mark.parametrize("free_nats", [0.0, 1.0])
def test_rssm_kl_losses_match_tfp_with_free_nats(free_nats):
    rng = np.random.default_rng(4)
    # Logit scales from nearly uniform to peaked, so some KLs fall below the free nats and some above.
    scale = np.linspace(0.05, 3.0, 2 * 6)[:, None, None].reshape(2, 6, 1, 1)
    post = (rng.normal(size=(2, 6, 3, 5)) * scale).astype(np.float32)
    prior = (rng.normal(size=(2, 6, 3, 5)) * scale).astype(np.float32)
    dyn, rep, metrics = make_rssm(free_nats).kl_losses(post, prior)
    kl = reference_kl(post, prior, 0.01)
    assert kl.shape == (2, 6)
    if free_nats:
        assert (kl < free_nats).any() and (kl > free_nats).any(), kl
    expected = np.maximum(kl, free_nats)
    np.testing.assert_allclose(to_numpy(dyn), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_numpy(rep), expected, rtol=1e-4, atol=1e-5)
    entropy = tfd.Independent(tfd.Categorical(probs=unimix_probs(prior, 0.01)), 1).entropy().mean()
    assert float(to_numpy(metrics["dyn_ent"])) == pytest.approx(entropy, rel=1e-4)


def test_rssm_kl_losses_route_gradients():
    """dyn trains only the prior logits, rep only the posterior logits (paper, Eq. 5)."""
    rssm = make_rssm(0.0)
    rng = np.random.default_rng(5)
    post = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    prior = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    loss = lambda index: lambda p, q: ops.sum(rssm.kl_losses(p, q)[index])
    assert np.all(gradient(lambda p: loss(0)(p, prior), post) == 0.0)
    assert np.abs(gradient(lambda q: loss(0)(post, q), prior)).max() > 1e-3
    assert np.abs(gradient(lambda p: loss(1)(p, prior), post)).max() > 1e-3
    assert np.all(gradient(lambda q: loss(1)(post, q), prior) == 0.0)


def test_rssm_free_nats_zero_gradient_when_clipped():
    rssm = make_rssm(100.0)
    rng = np.random.default_rng(6)
    post = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    prior = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(to_numpy(rssm.kl_losses(post, prior)[0]), 100.0)
    assert np.all(gradient(lambda q: ops.sum(rssm.kl_losses(post, q)[0]), prior) == 0.0)
