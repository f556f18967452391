"""Return normalisers (perc / meanstd / none, with and without debiasing) against numpy EMAs."""

from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from dreamer_tf.dreamerv3.behavior import Normalize


def to_float(x) -> float:
    return float(np.asarray(ops.convert_to_numpy(x)))


def batches(count: int = 6, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_t(3, size=(16, 15)) * (i + 1) + i).astype(np.float32) for i in range(count)]


@pytest.mark.parametrize("debias", [False, True])
def test_perc_tracks_ema_of_percentiles(debias):
    rate, limit = 0.1, 1.0
    norm = Normalize("perc", rate=rate, limit=limit, perclo=5.0, perchi=95.0, debias=debias)
    lo = hi = corr = 0.0
    for x in batches():
        offset, scale = norm(x, update=True)
        lo = (1 - rate) * lo + rate * np.percentile(x, 5.0)  # numpy's default is linear interpolation
        hi = (1 - rate) * hi + rate * np.percentile(x, 95.0)
        corr = (1 - rate) * corr + rate
        factor = 1.0 / max(rate, corr) if debias else 1.0
        assert to_float(offset) == pytest.approx(lo * factor, rel=1e-4, abs=1e-5)
        assert to_float(scale) == pytest.approx(max(limit, (hi - lo) * factor), rel=1e-4)
    assert float(norm.first.numpy()) == pytest.approx(lo, rel=1e-4)
    assert float(norm.second.numpy()) == pytest.approx(hi, rel=1e-4)


def test_perc_scale_is_at_least_limit():
    norm = Normalize("perc", rate=0.01, limit=1.0, perclo=5.0, perchi=95.0, debias=False)
    offset, scale = norm(np.full((8, 4), 3.0, np.float32), update=True)
    assert to_float(scale) == 1.0
    assert to_float(offset) == pytest.approx(0.03, rel=1e-5)
    # A wide batch lifts the scale above the limit: EMA of (P95 − P5) = 0.01 · 900 · 0.9 = 8.1.
    wide = np.linspace(0.0, 1000.0, 1001, dtype=np.float32)
    norm = Normalize("perc", rate=0.01, limit=1.0, perclo=5.0, perchi=95.0, debias=False)
    _, scale = norm(wide, update=True)
    assert to_float(scale) == pytest.approx(0.01 * 900.0, rel=1e-4)


def test_stats_without_update_leave_state_unchanged():
    norm = Normalize("perc", rate=0.5, limit=1e-8, perclo=5.0, perchi=95.0, debias=False)
    x = batches(1)[0]
    first = [to_float(v) for v in norm(x, update=True)]
    second = [to_float(v) for v in norm(x * 100, update=False)]
    assert first == second


@pytest.mark.parametrize("debias", [False, True])
def test_meanstd_tracks_ema_of_moments(debias):
    rate, limit = 0.2, 1e-8
    norm = Normalize("meanstd", rate=rate, limit=limit, perclo=5.0, perchi=95.0, debias=debias)
    mean = sqrs = corr = 0.0
    for x in batches(seed=1):
        offset, scale = norm(x, update=True)
        x64 = x.astype(np.float64)
        mean = (1 - rate) * mean + rate * x64.mean()
        sqrs = (1 - rate) * sqrs + rate * (x64**2).mean()
        corr = (1 - rate) * corr + rate
        factor = 1.0 / max(rate, corr) if debias else 1.0
        std = np.sqrt(max(0.0, sqrs * factor - (mean * factor) ** 2))
        assert to_float(offset) == pytest.approx(mean * factor, rel=1e-4, abs=1e-5)
        assert to_float(scale) == pytest.approx(max(limit, std), rel=1e-4)


def test_debias_recovers_the_first_batch_statistics():
    x = batches(1, seed=2)[0]
    norm = Normalize("meanstd", rate=0.01, limit=1e-8, perclo=5.0, perchi=95.0, debias=True)
    offset, scale = norm(x, update=True)
    assert to_float(offset) == pytest.approx(float(x.astype(np.float64).mean()), rel=1e-4)
    assert to_float(scale) == pytest.approx(float(x.astype(np.float64).std()), rel=1e-3)


def test_none_is_identity():
    norm = Normalize("none", rate=0.01, limit=1.0, perclo=5.0, perchi=95.0, debias=True)
    offset, scale = norm(batches(1)[0], update=True)
    assert (to_float(offset), to_float(scale)) == (0.0, 1.0)
    assert not norm.weights


def test_unknown_impl_raises():
    with pytest.raises(ValueError, match="median"):
        Normalize("median", rate=0.01, limit=1.0, perclo=5.0, perchi=95.0, debias=False)
