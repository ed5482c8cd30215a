"""The study's circuit measures on DBM masks (dcv.scoring.study), on hand-built masks whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dcv.scoring.study import by_step, circuit, compare, measures, over_seeds, retention, vulnerable_heads

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


def test_intervals_are_clipped_to_the_measures_range():
    wide = over_seeds([0.0, 1.0, 1.0])
    assert wide["low"] < 0 and wide["high"] > 1
    clipped = over_seeds([0.0, 1.0, 1.0], bounds=(0.0, 1.0))
    assert (clipped["low"], clipped["high"], clipped["mean"]) == (0.0, 1.0, wide["mean"])


def _dropped(*heads):
    x = BASE.copy()
    for l, h in heads:
        x[l, h] = 0.0
    return x


# arm a loses L0H0 at step 2 and L0H1 at step 4 (both seeds); arm b loses nothing; step 0 is the base
MASKS = {("a", s, 2): _dropped((0, 0)) for s in (0, 1)} | {("a", s, 4): _dropped((0, 0), (0, 1)) for s in (0, 1)} \
    | {("b", s, st): BASE for s in (0, 1) for st in (2, 4)}


def _of(arm, seed, step):
    return BASE if step == 0 else MASKS[(arm, seed, step)]


def test_an_arm_along_its_checkpoints_and_its_retention():
    rows = by_step(BASE, _of, "a", [0, 1], [0, 2, 4])
    assert [r["overlap"]["mean"] for r in rows] == [1.0, 0.75, 0.5] and rows[2]["size"]["seeds"] == [2.0, 2.0]
    r = retention(BASE, _of, "a", [0, 1], 2, 4)
    assert (r["first"]["mean"], r["last"]["mean"], r["change"]["mean"]) == (0.75, 0.5, -0.25)


def test_a_pair_at_weighted_checkpoints_interpolates_measures_and_masks():
    one = {s: [(4, 1.0)] for s in (0, 1)}
    c = compare(BASE, _of, ("a", "b"), {"a": one, "b": one}, 0.2)
    assert c["difference"]["overlap"]["diff"] == -0.5 and c["vulnerable"]["heads"] == ["L0H0", "L0H1"]
    assert c["vulnerable"]["a_below_b"]["seeds"] == [2.0, 2.0] and c["vulnerable"]["b_below_a"]["mean"] == 0.0
    half = {s: [(2, 0.5), (4, 0.5)] for s in (0, 1)}  # halfway between steps 2 and 4
    h = compare(BASE, _of, ("a", "b"), {"a": half, "b": one}, 0.2)
    assert h["arms"]["a"]["overlap"]["mean"] == pytest.approx(0.625)
    # the averaged mask of L0H1 is 0.4 (0.8 -> 0.4), below b's 0.8 by 0.4: still vulnerable at delta 0.2, not at 0.5
    assert h["vulnerable"]["heads"] == ["L0H0", "L0H1"]
    assert compare(BASE, _of, ("a", "b"), {"a": half, "b": one}, 0.5)["vulnerable"]["heads"] == ["L0H0"]


def test_difference_has_welch_the_seed_bootstrap_and_the_exact_permutation_p():
    """3 + 3 seeds fully separated: the exact permutation p is its smallest, 2 / C(6, 3) = 0.1, so no 3-seed design
    reaches 0.05; the seed bootstrap's interval lies within the range of resampled means and is seeded."""
    import numpy as np

    from dcv.scoring.study import difference

    d = difference([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], np.random.default_rng(0), 2000)
    assert d["diff"] == pytest.approx(-3.0) and d["low"] < -3.0 < d["high"]
    assert d["permutation"] == {"p": pytest.approx(0.1), "min_p": pytest.approx(0.1), "n_permutations": 20, "exact": True}
    assert -5.0 <= d["bootstrap"]["low"] < -3.0 < d["bootstrap"]["high"] <= -1.0
    assert d["high"] - d["low"] > d["bootstrap"]["high"] - d["bootstrap"]["low"]  # t is wider with 3 seeds
    assert difference([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], np.random.default_rng(0), 2000) == d
    same = difference([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], np.random.default_rng(0), 100)
    assert same["permutation"]["p"] == 1.0 and same["bootstrap"] == {"low": 0.0, "high": 0.0}
    assert np.isnan(difference([0.5], [], np.random.default_rng(0), 100)["permutation"]["p"])
