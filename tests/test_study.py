"""The study's circuit measures on DBM masks (dcv.scoring.study), on hand-built masks whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dcv.scoring.study import circuit, measures, over_seeds, vulnerable_heads

BASE = np.array([[0.9, 0.8, 0.1, 0.0], [0.7, 0.2, 0.95, 0.05]])  # C0 = 4 heads: L0H0, L0H1, L1H0, L1H2


def test_circuit_is_the_mask_above_one_half():
    assert circuit(BASE).sum() == 4 and circuit(np.full((2, 2), 0.5)).sum() == 0


def test_identical_masks_overlap_fully_and_do_not_shift():
    m = measures(BASE, BASE)
    assert (m.size, m.base_size, m.overlap, m.jaccard, m.mask_shift, m.mask_shift_c0) == (4, 4, 1.0, 1.0, 0.0, 0.0)


def test_a_model_that_drops_one_base_head_and_adds_one():
    x = BASE.copy()
    x[0, 1], x[0, 2] = 0.1, 0.9  # L0H1 leaves the circuit, L0H2 joins it
    m = measures(BASE, x)
    assert m.size == 4 and m.overlap == pytest.approx(3 / 4) and m.jaccard == pytest.approx(3 / 5)
    assert m.mask_shift == pytest.approx((0.1 - 0.8 + 0.9 - 0.1) / 8)
    assert m.mask_shift_c0 == pytest.approx((0.1 - 0.8) / 4)


def test_empty_base_circuit_gives_undefined_overlap():
    m = measures(np.zeros((1, 2)), np.ones((1, 2)))
    assert math.isnan(m.overlap) and m.jaccard == 0.0 and math.isnan(m.mask_shift_c0)
    with pytest.raises(ValueError, match="mask shapes differ"):
        measures(np.zeros((1, 2)), np.zeros((2, 1)))


def test_vulnerable_heads_are_base_heads_a_drops_more_than_b_by_delta():
    a, b = BASE.copy(), BASE.copy()
    a[0, 0], a[1, 2], a[0, 2] = 0.3, 0.85, 0.0  # L0H0 drops by 0.6, L1H2 by 0.1; L0H2 is outside C0
    b[0, 2] = 0.9
    assert vulnerable_heads(BASE, a, b, 0.2) == [(0, 0)]
    assert vulnerable_heads(BASE, a, b, 0.05) == [(0, 0), (1, 2)]
    assert vulnerable_heads(BASE, b, a, 0.05) == []


def test_seed_intervals():
    one = over_seeds([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["low"])
    three = over_seeds([0.4, 0.5, 0.6])
    assert three["mean"] == pytest.approx(0.5) and three["low"] < 0.4 < 0.6 < three["high"]
