"""Small-sample statistics, NaN handled explicitly: summaries over seeds, t intervals, permutation tests, least squares
with and without a group fixed effect, and the run-clustered bootstrap of a statistic.

None means "not measured" and is left out; NaN means "undefined" (a ratio with a zero denominator) and is left out
too, but counted (`count_undefined`), so that a caller can say how many values a summary rests on. Nothing here
needs scipy: Student's t comes from the regularised incomplete beta function (tested against scipy where present).
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from typing import Iterable, Sequence

import numpy as np


def finite(xs: Iterable[float | None]) -> list[float]:
    """The values that are neither None nor NaN/inf."""
    return [float(x) for x in xs if x is not None and math.isfinite(float(x))]


def count_undefined(xs: Iterable[float | None]) -> int:
    """How many values are NaN/inf (None, not measured, is not counted)."""
    return sum(1 for x in xs if x is not None and not math.isfinite(float(x)))


def mean(xs: Iterable[float | None]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    v = finite(xs)
    return statistics.fmean(v) if v else float("nan")


def sd(xs: Iterable[float | None]) -> float:
    """Sample standard deviation (n - 1) of the finite values; 0.0 for one value, NaN for none."""
    v = finite(xs)
    if not v:
        return float("nan")
    return statistics.stdev(v) if len(v) > 1 else 0.0


# ---- Student's t ---------------------------------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom (df = inf: the standard normal)."""
    if math.isinf(df):
        return 0.5 * (1.0 + math.erf(t / math.sqrt(2.0)))
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on `t_cdf`; NaN for df <= 0 or NaN). Cached: score-dcv asks for the
    same few (level, df) hundreds of times."""
    if not (df > 0) or not 0.0 < p < 1.0:
        return float("nan")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):  # converged to adjacent floats: the rest of the 200 halvings change nothing
            break
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def satterthwaite(components: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variance components [(variance, df), ...]; df = inf
    for a component known without error (a bootstrap variance). inf when every component is exact or zero."""
    total = sum(v for v, _ in components)
    den = sum(v * v / d for v, d in components if not math.isinf(d) and d > 0)
    if total <= 0 or den <= 0:
        return float("inf")
    return total * total / den


def t_interval(point: float, components: Sequence[tuple[float, float]], level: float = 0.95) -> dict:
    """point ± t_{df, (1+level)/2} * sqrt(sum of variances): `components` [(variance, df)], df by Satterthwaite.
    A NaN variance gives a NaN interval."""
    var = sum(v for v, _ in components)
    if not math.isfinite(point) or not math.isfinite(var):
        return {"low": float("nan"), "high": float("nan"), "se": float("nan"), "df": float("nan")}
    df = satterthwaite(components)
    half = t_quantile(0.5 + level / 2.0, df) * math.sqrt(max(var, 0.0))
    return {"low": point - half, "high": point + half, "se": math.sqrt(max(var, 0.0)), "df": df}


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Welch's t interval of mean(a) - mean(b) (units: one value per seed); NaN with fewer than 2 values in a
    group."""
    a, b = finite(a), finite(b)
    d = mean(a) - mean(b) if a and b else float("nan")
    if len(a) < 2 or len(b) < 2:
        return {"diff": d, "low": float("nan"), "high": float("nan"), "se": float("nan"), "df": float("nan")}
    comps = [(statistics.variance(a) / len(a), len(a) - 1.0), (statistics.variance(b) / len(b), len(b) - 1.0)]
    return {"diff": d, **t_interval(d, comps, level)}


# ---- permutation tests ---------------------------------------------------------------------------------------------

def permutation_test(a: Sequence[float], b: Sequence[float], rng: np.random.Generator | None = None,
                     n_random: int = 9999, max_exact: int = 20000) -> dict:
    """Two-sample label permutation test of mean(a) - mean(b), two-sided. Exact over every relabelling when there
    are at most `max_exact` of them, else `n_random` random ones (p with the +1 correction). `min_p`: the
    smallest p the design can give (exact: 2 / C(n_a + n_b, n_a) at best, for a symmetric split)."""
    a, b = finite(a), finite(b)
    x = np.asarray(a + b, dtype=np.float64)
    na, n = len(a), len(a) + len(b)
    if not a or not b:
        return {"stat": float("nan"), "p": float("nan"), "n_permutations": 0, "exact": True, "min_p": float("nan")}
    obs = float(np.mean(a) - np.mean(b))
    tol = 1e-12 * max(1.0, float(np.abs(x).max()))
    total = math.comb(n, na)
    if total <= max_exact:
        idx = np.array(list(itertools.combinations(range(n), na)))  # [relabelling, n_a]
        sa = x[idx].sum(1)
        stats = sa / na - (x.sum() - sa) / (n - na)
        hits = int((np.abs(stats) >= abs(obs) - tol).sum())
        counts = np.unique(np.round(np.abs(stats), 12), return_counts=True)[1]
        return {"stat": obs, "p": hits / total, "n_permutations": total, "exact": True,
                "min_p": float(counts[-1] / total)}
    rng = rng or np.random.default_rng(0)
    perm = np.argsort(rng.random((n_random, n)), axis=1)[:, :na]  # [draw, n_a]
    sa = x[perm].sum(1)
    stats = sa / na - (x.sum() - sa) / (n - na)
    hits = int((np.abs(stats) >= abs(obs) - tol).sum())
    return {"stat": obs, "p": (hits + 1) / (n_random + 1), "n_permutations": n_random, "exact": False,
            "min_p": 1.0 / (n_random + 1)}


def sign_flip_test(groups: Sequence[np.ndarray], rng: np.random.Generator | None = None, n_random: int = 9999,
                   max_exact_units: int = 16) -> dict:
    """Paired label permutation: each unit's difference d (two models measured on the same unit, e.g. a probe pair)
    flips sign when its two labels swap. Statistic: the mean over groups of each group's mean d (groups: e.g.
    capabilities, whose pairs differ). Two-sided; exact over all 2^n flips for at most `max_exact_units` units."""
    gs = [np.asarray(g, dtype=np.float64).ravel() for g in groups]
    gs = [g[np.isfinite(g)] for g in gs if np.isfinite(g).any()]
    if not gs:
        return {"stat": float("nan"), "p": float("nan"), "n_permutations": 0, "exact": True, "min_p": float("nan")}
    w = np.concatenate([np.full(g.size, 1.0 / (g.size * len(gs))) for g in gs])  # stat = sum w d
    d = np.concatenate(gs)
    obs = float((w * d).sum())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if d.size <= max_exact_units:
        signs = 1.0 - 2.0 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)  # [flip, unit]
        stats = signs @ (w * d)
        return {"stat": obs, "p": float((np.abs(stats) >= abs(obs) - tol).mean()), "n_permutations": 2 ** d.size,
                "exact": True, "min_p": 2.0 / 2 ** d.size}
    rng = rng or np.random.default_rng(0)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_random, d.size))
    stats = signs @ (w * d)
    hits = int((np.abs(stats) >= abs(obs) - tol).sum())
    return {"stat": obs, "p": (hits + 1) / (n_random + 1), "n_permutations": n_random, "exact": False,
            "min_p": 1.0 / (n_random + 1)}


# ---- least squares -------------------------------------------------------------------------------------------------

def _clean(x, y, g=None):
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    return (xa[ok], ya[ok]) if g is None else (xa[ok], ya[ok], np.asarray(g, dtype=object)[ok])


def ols(x, y) -> dict:
    """y = a + b x: R^2, slope, intercept, n (NaN R^2 with fewer than 3 points or a constant x or y)."""
    xa, ya = _clean(x, y)
    n = int(xa.size)
    if n < 3 or np.ptp(xa) == 0:
        return {"r2": float("nan"), "slope": float("nan"), "intercept": float("nan"), "n": n}
    b, a = np.polyfit(xa, ya, 1)
    ss_res = float(((ya - (a + b * xa)) ** 2).sum())
    ss_tot = float(((ya - ya.mean()) ** 2).sum())
    return {"r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"), "slope": float(b), "intercept": float(a),
            "n": n}


def within_r2(x, y, groups) -> dict:
    """y = a_group + b x (a fixed effect per group): the within R^2, the share of the variance of y around its group
    means that the common slope explains (what x explains beyond the group), and the slope."""
    xa, ya, ga = _clean(x, y, groups)
    n = int(xa.size)
    if n < 3:
        return {"r2": float("nan"), "slope": float("nan"), "n": n}
    xd, yd = xa.copy(), ya.copy()
    for g in set(ga.tolist()):
        m = ga == g
        xd[m] -= xa[m].mean()
        yd[m] -= ya[m].mean()
    sxx, syy = float((xd * xd).sum()), float((yd * yd).sum())
    if sxx <= 0 or syy <= 0 or n - len(set(ga.tolist())) < 2:
        return {"r2": float("nan"), "slope": float("nan"), "n": n}
    b = float((xd * yd).sum()) / sxx
    return {"r2": 1.0 - float(((yd - b * xd) ** 2).sum()) / syy, "slope": b, "n": n}


def cluster_resamples(clusters: Sequence, strata: Sequence, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`n_boot` resamples of whole clusters (runs), drawn with replacement within each stratum (arm) so every
    resample keeps each arm's number of runs; each resample is the array of its points' indices."""
    clusters, strata = list(clusters), list(strata)
    members: dict = {}
    for i, c in enumerate(clusters):
        members.setdefault(c, []).append(i)
    by_stratum: dict = {}
    for c in sorted(members, key=str):
        by_stratum.setdefault(strata[members[c][0]], []).append(c)
    out = []
    for _ in range(n_boot):
        idx: list[int] = []
        for s in sorted(by_stratum, key=str):
            cs = by_stratum[s]
            for j in rng.integers(0, len(cs), len(cs)):
                idx += members[cs[j]]
        out.append(np.asarray(idx, dtype=int))
    return out
