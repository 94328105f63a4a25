"""Calibration measures and temperature scaling against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fem import calibration as C
from fem import metrics as M


def test_nll_hand_computed_soft_and_clipped():
    assert C.nll([0.8, 0.6, 0.9], [1, 0, 1]) == pytest.approx(-(math.log(0.8) + math.log(0.4) + math.log(0.9)) / 3)
    assert C.nll([0.8], [0.5]) == pytest.approx(-(0.5 * math.log(0.8) + 0.5 * math.log(0.2)))
    assert C.nll([1.0], [0]) == pytest.approx(-math.log(1e-6))  # a wrong "100 %" is finite but heavy
    assert C.nll([], []) == 0.0
    with pytest.raises(ValueError):
        C.nll([1.2], [1])


def test_equal_mass_ece_hand_computed():
    conf = [0.9, 0.1, 0.6, 0.2, 0.7, 0.3]  # unsorted on purpose
    target = [1, 0, 1, 0, 0, 1]
    # sorted: (.1,0) (.2,0) | (.3,1) (.6,1) | (.7,0) (.9,1): gaps .15, .55, .30, each bin 2/6 of the items
    assert C.ece(conf, target, n_bins=3, binning="mass") == pytest.approx((0.15 + 0.55 + 0.30) / 3)
    rows = C.reliability(conf, target, n_bins=3, binning="mass")
    assert [r["count"] for r in rows] == [2, 2, 2] and rows[1]["lo"] == 0.3 and rows[1]["hi"] == 0.6
    # 15 equal-width bins: every item alone in its bin, so ECE = mean |target - confidence|
    assert C.ece(conf, target) == pytest.approx((0.1 + 0.1 + 0.4 + 0.2 + 0.7 + 0.7) / 6)
    # uneven counts: 7 items in 3 bins -> 3, 2, 2
    assert [len(i) for i in C.bin_indices([i / 10 for i in range(7)], 3, "mass")] == [3, 2, 2]


def test_equal_width_matches_the_existing_metric():
    rng = np.random.default_rng(0)
    conf, target = rng.uniform(size=200), (rng.uniform(size=200) < 0.6).astype(float)
    assert C.ece(conf, target) == pytest.approx(M.ece(list(conf), list(target)))
    assert C.brier(conf, target) == pytest.approx(M.brier(list(conf), list(target)))


def test_temperature_fit_hand_computed():
    # logit gap ln 4 (read-out 0.8) on three items, two right: the fit makes sigmoid(ln 4 / T) = 2/3, so T = 2
    logits = C.log_probs([[0.8, 0.2]] * 3)
    assert C.fit_temperature(logits, [[1, 0], [1, 0], [0, 1]]) == pytest.approx(2.0, rel=1e-9)
    assert C.fit_temperature(logits[:1], [[2 / 3, 1 / 3]]) == pytest.approx(2.0, rel=1e-9)  # soft target
    assert C.scale(logits[:1], 2.0)[0, 0] == pytest.approx(2 / 3)
    # no signal at all: the gap is the same whichever label is right -> T = inf (chance)
    assert math.isinf(C.fit_temperature([[1.0, 0.0], [1.0, 0.0]], [[1, 0], [0, 1]]))
    assert C.scale([[1.0, 0.0]], math.inf)[0].tolist() == [0.5, 0.5]


@pytest.mark.parametrize("true_t, k", [(2.5, 2), (0.5, 2), (1.7, 3)])
def test_temperature_fit_recovers_a_known_temperature(true_t, k):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(20000, k))
    probs = C.scale(logits, true_t)
    labels = (rng.uniform(size=(20000, 1)) > probs.cumsum(axis=1)).sum(axis=1)
    onehot = np.eye(k)[labels]
    fitted = C.fit_temperature(logits, onehot)
    assert fitted == pytest.approx(true_t, rel=0.05)
    assert C.cross_entropy(logits, onehot, fitted) <= C.cross_entropy(logits, onehot, 1.0)


def test_temperature_fit_rejects_bad_input():
    with pytest.raises(ValueError):
        C.fit_temperature([[0.0, 1.0]], [[0.5, 0.6]])  # a target row that is not a distribution
    with pytest.raises(ValueError):
        C.fit_temperature([[-math.inf, 0.0]], [[1, 0]])


def test_bootstrap_interval_items_and_groups():
    x = np.array([0.0, 0.0, 1.0, 1.0])

    def mean(idx):
        return float(x[idx].mean())

    lo, hi = C.bootstrap_interval(mean, 4, groups=["a", "a", "b", "b"], n_boot=300)
    assert {lo, hi} <= {0.0, 0.5, 1.0}  # a group is resampled whole: only 0, 1/2 and 1 are possible
    values = {mean(np.concatenate([[0, 1] if g == 0 else [2, 3] for g in pick])) for pick in [[0, 0], [0, 1], [1, 1]]}
    assert values == {0.0, 0.5, 1.0}
    coin = (np.random.default_rng(2).uniform(size=400) < 0.5).astype(float)
    lo, hi = C.bootstrap_interval(lambda idx: float(coin[idx].mean()), 400, n_boot=500)
    assert lo < coin.mean() < hi and 0.07 < hi - lo < 0.13  # about 2 x 1.96 x sqrt(.25 / 400) = 0.098
    assert C.with_interval(lambda idx: 1.0, 3)["interval"] == [1.0, 1.0]
    assert all(math.isnan(v) for v in C.bootstrap_interval(lambda idx: math.nan, 3, n_boot=5))
