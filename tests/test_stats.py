"""dcv.stats (t, permutation tests, least squares, clustered resampling) and the coverage of DCV's intervals."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from tests.conftest import REPO


def test_t_quantiles_are_students():
    from dcv.stats import t_cdf, t_quantile

    # Tabulated two-sided 95% quantiles.
    for df, q in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (10, 2.2281), (30, 2.0423), (math.inf, 1.9600)):
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))
    assert t_cdf(0.0, 5) == pytest.approx(0.5) and math.isnan(t_quantile(0.975, 0))
    scipy = pytest.importorskip("scipy.stats")
    for df in (1.5, 2.7, 7.0, 55.0):
        assert t_quantile(0.9, df) == pytest.approx(scipy.t.ppf(0.9, df), rel=1e-9)
        assert t_cdf(-1.7, df) == pytest.approx(scipy.t.cdf(-1.7, df), rel=1e-9)


def test_welch_and_satterthwaite():
    from dcv.stats import satterthwaite, t_interval, welch

    w = welch([1.0, 2.0, 3.0], [2.0, 4.0, 9.0])
    assert w["diff"] == -3.0 and w["df"] == pytest.approx(2.3058823529411763)  # scipy's Welch df
    assert w["low"] < -3.0 < w["high"]
    assert math.isnan(welch([1.0], [2.0, 3.0])["low"])  # one value: no variance
    assert satterthwaite([(1.0, 2.0), (0.0, math.inf)]) == pytest.approx(2.0)
    assert satterthwaite([(1.0, math.inf)]) == math.inf
    ci = t_interval(1.0, [(0.0, 2.0), (0.0, math.inf)])
    assert (ci["low"], ci["high"]) == (1.0, 1.0)
    assert math.isnan(t_interval(1.0, [(float("nan"), 2.0)])["low"])


def test_permutation_tests_exact_and_random():
    from dcv.stats import permutation_test, sign_flip_test

    p = permutation_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert p["exact"] and p["n_permutations"] == 20 and p["p"] == pytest.approx(0.1) and p["min_p"] == pytest.approx(0.1)
    assert permutation_test([1.0, 2.0], [1.0, 2.0])["p"] == 1.0
    big = permutation_test(list(range(20)), list(range(10, 30)), np.random.default_rng(0), n_random=999)
    assert not big["exact"] and 0 < big["p"] < 0.01
    f = sign_flip_test([np.array([1.0, 2.0, 3.0])])
    assert f["exact"] and f["p"] == pytest.approx(0.25)  # only the all-positive and all-negative flips are as extreme
    assert sign_flip_test([np.ones(40)], np.random.default_rng(0), 999)["p"] == pytest.approx(1 / 1000)
    assert sign_flip_test([np.r_[np.ones(20), -np.ones(20)]], np.random.default_rng(0), 999)["p"] == 1.0


def test_least_squares_pooled_and_with_a_group_effect():
    from dcv.stats import ols, within_r2

    x = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 12.0])
    g = np.array(["a", "a", "a", "b", "b", "b"])
    y = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])  # within each group y = x - mean; pooled, x mostly tells groups apart
    assert within_r2(x, y, g)["r2"] == pytest.approx(1.0) and within_r2(x, y, g)["slope"] == pytest.approx(1.0)
    assert ols(x, y)["r2"] < 0.2
    assert math.isnan(ols([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])["r2"])  # two finite points


def test_cluster_resamples_keep_each_arms_number_of_runs():
    from dcv.stats import cluster_resamples

    clusters = [("a", 0)] * 3 + [("a", 1)] * 3 + [("b", 0)] * 3
    strata = [c[0] for c in clusters]
    for idx in cluster_resamples(clusters, strata, 50, np.random.default_rng(0)):
        runs = [clusters[i] for i in idx]
        assert sum(r[0] == "a" for r in runs) == 6 and sum(r[0] == "b" for r in runs) == 3
        for r in set(runs):  # whole runs: all three of its points, once per time the run was drawn
            assert runs.count(r) % 3 == 0


def test_nan_values_are_left_out_and_counted():
    from dcv.stats import count_undefined, finite, mean, sd

    assert mean([1.0, float("nan"), 3.0, None]) == 2.0 and finite([1.0, float("nan"), None]) == [1.0]
    assert count_undefined([1.0, float("nan"), None, float("inf")]) == 2
    assert sd([1.0]) == 0.0 and math.isnan(sd([])) and sd([1.0, 3.0]) == pytest.approx(math.sqrt(2))


def _bench():
    spec = importlib.util.spec_from_file_location("coverage_bench", REPO / "bench" / "coverage.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("regime", ["seeds", "pairs"])
def test_the_headline_interval_covers_the_known_dcv(regime):
    """Nominal 95% over 200 simulations (3 seeds per arm, 32 pairs): the headline interval covers (>= 0.85) whether
    the seeds' or the pairs' variance dominates; in the regime it ignores, each partial interval falls short."""
    res = _bench().coverage(200, 3, 32, 200, seed=1, regime=regime)
    assert res["ci95"]["coverage"] >= 0.85, res
    short = {"seeds": "ci95_bootstrap", "pairs": "ci95_seeds"}[regime]  # resamples 3 seeds / ignores the pairs
    assert res[short]["coverage"] < res["ci95"]["coverage"], res
