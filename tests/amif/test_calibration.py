"""Expected calibration error and reliability bins of the top-1 probability."""

from __future__ import annotations

import pytest

from amif.calibration import calibration_from_rows, expected_calibration_error, reliability_bins


def test_perfectly_calibrated_bins_give_zero():
    conf = [0.9] * 10 + [0.5] * 4
    ok = [True] * 9 + [False] + [True, True, False, False]
    assert expected_calibration_error(conf, ok) == pytest.approx(0.0, abs=1e-12)


def test_ece_is_the_count_weighted_gap():
    # bin of 0.95 (2 questions, both wrong): gap 0.95; bin of 0.25 (2 questions, 1 right): gap 0.25
    conf, ok = [0.95, 0.95, 0.25, 0.25], [False, False, True, False]
    assert expected_calibration_error(conf, ok) == pytest.approx((2 * 0.95 + 2 * 0.25) / 4)


def test_bins_edges_and_empty():
    bins = reliability_bins([0.0, 1.0, 1 / 15], [True, False, True])
    assert len(bins) == 15 and bins[0]["n"] == 1 and bins[-1]["n"] == 1 and bins[1]["n"] == 1
    assert bins[5]["accuracy"] is None and bins[-1]["accuracy"] == 0.0
    assert expected_calibration_error([], []) is None
    with pytest.raises(ValueError):
        reliability_bins([1.2], [True])


def test_from_rows_reads_the_top_probability():
    rows = [{"ranked": [{"answer": "yes", "prob": 0.8}], "correct": True},
            {"ranked": [{"answer": "no", "prob": 0.6}], "correct": False}]
    cal = calibration_from_rows(rows)
    assert cal["ece"] == pytest.approx((0.2 + 0.6) / 2) and cal["n_bins"] == 15
