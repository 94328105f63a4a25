import math

import pytest

from fem import metrics as M


def test_ece_and_brier_hand_computed():
    conf = [0.9, 0.9, 0.6, 0.6, 0.2]
    correct = [1, 0, 1, 1, 0]
    # bins (15 equal-width): 0.9 -> bin 13 (acc 0.5, conf 0.9), 0.6 -> bin 9 (acc 1, conf .6), 0.2 -> bin 3 (acc 0, conf .2)
    expected_ece = 2 / 5 * 0.4 + 2 / 5 * 0.4 + 1 / 5 * 0.2
    assert M.ece(conf, correct) == pytest.approx(expected_ece)
    expected_brier = (0.01 + 0.81 + 0.16 + 0.16 + 0.04) / 5
    assert M.brier(conf, correct) == pytest.approx(expected_brier)
    table = M.reliability_table(conf, correct)
    assert [r["count"] for r in table] == [1, 2, 2]
    assert table[-1]["accuracy"] == pytest.approx(0.5)


def test_ece_perfect_and_confidence_one_in_last_bin():
    assert M.ece([1.0, 1.0], [1, 1]) == 0.0
    assert M.reliability_table([1.0], [1])[0]["hi"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.ece([1.2], [1])


def test_soft_targets():
    assert M.brier([0.8], [0.5]) == pytest.approx(0.09)
    assert M.ece([0.8, 0.8], [0.5, 0.7]) == pytest.approx(0.2)


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 5), (20, 0, 3), (5, 5, 2), (7, 2, 6), (100, 13, 10)])
def test_unbiased_pass_at_k_matches_formula(n, c, k):
    expected = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert M.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_errors_and_mean():
    with pytest.raises(ValueError):
        M.pass_at_k(3, 1, 4)
    assert M.mean_pass_at_k([[1, 0], [0, 0]], 1) == pytest.approx(0.25)


def test_maj_at_k():
    groups = [
        (["5", "5", "7"], [1, 1, 0]),
        (["3", "4", "4"], [1, 0, 0]),
        ([None, None, "2"], [0, 0, 1]),
        ([None, None], [0, 0]),
    ]
    assert M.maj_at_k(groups) == pytest.approx(2 / 4)
    assert M.majority(["a", "b"]) == "a"


def test_every_reliability_row_holds_the_confidences_of_its_own_bin():
    """Each row's [lo, hi) contains the confidences put in it (issue 17, item 13: an off-by-one bin index kept
    every count and the ECE, and only moved the bounds, so no test saw it)."""
    conf = [0.0, 0.05, 0.5, 0.52, 0.93, 1.0]
    table = M.reliability_table(conf, [0, 1, 1, 0, 1, 1], n_bins=10)
    assert [(round(r["lo"], 9), round(r["hi"], 9), r["count"]) for r in table] == [
        (0, 0.1, 2),
        (0.5, 0.6, 2),
        (0.9, 1, 2),
    ]
    for row in table:
        assert row["lo"] <= row["confidence"] <= row["hi"]
