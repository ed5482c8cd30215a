"""The study's circuit measures (arXiv 2605.28860), computed from DBM head masks (`dcv.circuits.dbm.HeadMask`).

The study fits a mask m_h in [0, 1] per head on each model separately and reads the binary circuit C = {h: m_h >
0.5}. Its measures, defined here on mask arrays [layer, head]:

- size |C_x|;
- overlap with the base circuit |C_x ∩ C_0| / |C_0| (the study's "overlap" and, by checkpoint, its "retention"),
  beside the symmetric Jaccard |C_x ∩ C_0| / |C_x ∪ C_0|;
- mask shift Δm_h = m_h^x − m_h^0, summarised as its mean over heads and its mean over C_0;
- vulnerable heads of a pair (a, b): heads of C_0 with m_h^a < m_h^b − δ (the heads a drops more than b).

Across seeds, each measure is a mean with a t interval over seeds (`over_seeds`, clipped to the measure's range:
a clipped interval covers whenever the unclipped one does; a difference of two arms: `dcv.stats.welch`, and beside
it the seed bootstrap of the rest of score-dcv (each arm's seeds resampled with replacement, percentile interval)
and an exact label-permutation p-value over the seeds, with the smallest p the seed counts allow). One mask per
seed and model: the masks are not refit per probe-pair draw (that would cost a DBM fit per draw and model), so
probe-pair noise is not in these intervals (DBM is deterministic given the pairs). With 3 seeds the percentile
bootstrap is narrower than the t interval (it has 10 distinct resamples per arm); the t interval is the one the
report reads for a verdict. `compare` scores a pair of arms at chosen checkpoints with weights (equal steps: one
step; equal accuracy: the two checkpoints around the level, each measure interpolated alike and the masks averaged
with the same weights for the vulnerable heads); `by_step` and `retention` follow one arm along its checkpoints.
Nothing here reads files: score-dcv passes the masks as `mask_of(arm, seed, step)` (step 0: the model the arm
started from).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from dcv.bootstrap import ci95, seed_draws
from dcv.stats import permutation_test, t_interval, welch

MEASURES = ("size", "overlap", "jaccard", "mask_shift", "mask_shift_c0")
FRACTIONS = ("overlap", "jaccard")  # in [0, 1]; the mask shifts are in [-1, 1], the size in [0, n heads]

Terms = dict  # seed -> [(step, weight)]: the checkpoints a seed is read at (weights sum to 1)


def circuit(mask: np.ndarray) -> np.ndarray:
    """The binary circuit of a mask: m_h > 0.5 (the study's threshold), a bool array [layer, head]."""
    return np.asarray(mask, dtype=float) > 0.5


@dataclass(frozen=True)
class StudyMeasures:
    """One model's measures against the base."""

    size: int
    base_size: int
    overlap: float  # |C_x ∩ C_0| / |C_0| (NaN for an empty base circuit)
    jaccard: float  # |C_x ∩ C_0| / |C_x ∪ C_0| (NaN when both are empty)
    mask_shift: float  # mean over heads of m_x - m_0
    mask_shift_c0: float  # mean over C_0 of m_x - m_0 (NaN for an empty base circuit)


def measures(base: np.ndarray, model: np.ndarray) -> StudyMeasures:
    m0, mx = np.asarray(base, dtype=float), np.asarray(model, dtype=float)
    if m0.shape != mx.shape:
        raise ValueError(f"mask shapes differ: base {m0.shape}, model {mx.shape}")
    c0, cx = circuit(m0), circuit(mx)
    inter, union = int((c0 & cx).sum()), int((c0 | cx).sum())
    n0 = int(c0.sum())
    shift = mx - m0
    return StudyMeasures(size=int(cx.sum()), base_size=n0, overlap=inter / n0 if n0 else float("nan"),
                         jaccard=inter / union if union else float("nan"), mask_shift=float(shift.mean()),
                         mask_shift_c0=float(shift[c0].mean()) if n0 else float("nan"))


def vulnerable_heads(base: np.ndarray, a: np.ndarray, b: np.ndarray, delta: float) -> list[tuple[int, int]]:
    """Heads of the base circuit C_0 whose mask under `a` is below their mask under `b` by more than `delta`."""
    c0 = circuit(base)
    hit = c0 & (np.asarray(a, dtype=float) < np.asarray(b, dtype=float) - delta)
    return [(int(l), int(h)) for l, h in zip(*np.nonzero(hit))]


def over_seeds(values: list[float], level: float = 0.95, bounds: tuple[float, float] | None = None) -> dict:
    """Mean over seeds with its t interval (sample variance / n, n - 1 df), clipped to `bounds`; one seed: no
    interval."""
    xs = [v for v in values if v == v]
    m = statistics.fmean(xs) if xs else float("nan")
    if len(xs) < 2:
        return {"mean": m, "n": len(xs), "low": float("nan"), "high": float("nan")}
    ci = t_interval(m, [(statistics.variance(xs) / len(xs), len(xs) - 1.0)], level)
    low, high = ci["low"], ci["high"]
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": m, "n": len(xs), "low": low, "high": high}


def _bounds(measure: str, n_heads: int) -> tuple[float, float]:
    return (0.0, float(n_heads)) if measure == "size" else (0.0, 1.0) if measure in FRACTIONS else (-1.0, 1.0)


def seed_values(base: np.ndarray, mask_of, arm: str, terms: Terms) -> dict[str, list[float]]:
    """Each measure per seed (in seed order), read at that seed's checkpoints with their weights."""
    per = {s: [(measures(base, mask_of(arm, s, st)), w) for st, w in terms[s]] for s in sorted(terms)}
    return {k: [sum(w * getattr(x, k) for x, w in per[s]) for s in sorted(per)] for k in MEASURES}


def summary(values: dict[str, list[float]], n_heads: int) -> dict:
    """Every measure's mean over seeds with its (clipped) t interval, and the per-seed values."""
    return {k: {**over_seeds(v, bounds=_bounds(k, n_heads)), "seeds": v} for k, v in values.items()}


def _soft(mask_of, arm: str, terms: Terms) -> dict[int, np.ndarray]:
    return {s: sum(w * np.asarray(mask_of(arm, s, st), dtype=float) for st, w in terms[s]) for s in sorted(terms)}


def difference(a: list[float], b: list[float], rng: np.random.Generator, n_boot: int) -> dict:
    """mean(a) - mean(b) over seeds: Welch's t interval (diff, low, high, se, df), the seed bootstrap's percentile
    interval (`bootstrap`: each group's values resampled with replacement, `n_boot` draws) and the exact permutation
    test of the seed labels (`permutation`: p, min_p, n_permutations, exact)."""
    out = welch(a, b)
    xa, xb = (np.asarray([v for v in x if v == v], dtype=float) for x in (a, b))
    if len(xa) and len(xb) and n_boot:
        boot = xa[seed_draws(rng, len(xa), (n_boot, len(xa)))].mean(1) - xb[seed_draws(rng, len(xb), (n_boot, len(xb)))].mean(1)
        out["bootstrap"] = ci95(boot)
    else:
        out["bootstrap"] = {"low": float("nan"), "high": float("nan")}
    pt = permutation_test(list(xa), list(xb), rng)
    out["permutation"] = {k: pt[k] for k in ("p", "min_p", "n_permutations", "exact")}
    return out


def compare(base: np.ndarray, mask_of, pair: tuple[str, str], terms: dict[str, Terms], delta: float,
            rng: np.random.Generator | None = None, n_boot: int = 1000) -> dict:
    """A pair of arms at their checkpoints `terms[arm]`: each arm's measures, their difference a - b (`difference`:
    Welch's t, the seed bootstrap with `rng`, the permutation test), and the vulnerable heads of C_0 (a below b by
    more than delta) per seed (seed s of a against seed s of b) with, as its baseline, the same count with the arms
    swapped; `heads`: those of the seed-mean masks."""
    rng = rng if rng is not None else np.random.default_rng(0)
    a, b = pair
    n = int(np.asarray(base).size)
    vals = {x: seed_values(base, mask_of, x, terms[x]) for x in pair}
    soft = {x: _soft(mask_of, x, terms[x]) for x in pair}
    seeds = sorted(set(soft[a]) & set(soft[b]))
    count = {(x, y): [float(len(vulnerable_heads(base, soft[x][s], soft[y][s], delta))) for s in seeds]
             for x, y in (pair, pair[::-1])}
    mean = {x: np.mean([soft[x][s] for s in seeds], axis=0) for x in pair}
    n0 = float(circuit(base).sum())
    return {"arms": {x: summary(vals[x], n) for x in pair},
            "difference": {k: difference(vals[a][k], vals[b][k], rng, n_boot) for k in MEASURES},
            "vulnerable": {"delta": delta, "base_size": int(n0),
                           "a_below_b": {**over_seeds(count[(a, b)], bounds=(0.0, n0)), "seeds": count[(a, b)]},
                           "b_below_a": {**over_seeds(count[(b, a)], bounds=(0.0, n0)), "seeds": count[(b, a)]},
                           "heads": [f"L{l}H{h}" for l, h in vulnerable_heads(base, mean[a], mean[b], delta)],
                           "heads_b_below_a": [f"L{l}H{h}" for l, h in vulnerable_heads(base, mean[b], mean[a], delta)]}}


def by_step(base: np.ndarray, mask_of, arm: str, seeds: list[int], steps: list[int]) -> list[dict]:
    """The arm's measures at each step (0: the model it started from), mean over seeds with intervals."""
    n = int(np.asarray(base).size)
    return [{"step": st, **summary(seed_values(base, mask_of, arm, {s: [(st, 1.0)] for s in seeds}), n)}
            for st in steps]


def retention(base: np.ndarray, mask_of, arm: str, seeds: list[int], first: int, last: int) -> dict:
    """The study's retention across training: overlap with C_0 at the first checkpoint and at the last, and the
    change last - first per seed (mean with its interval)."""
    o = {st: seed_values(base, mask_of, arm, {s: [(st, 1.0)] for s in seeds})["overlap"] for st in (first, last)}
    change = [y - x for x, y in zip(o[first], o[last])]
    return {"first_step": first, "last_step": last,
            "first": over_seeds(o[first], bounds=(0.0, 1.0)), "last": over_seeds(o[last], bounds=(0.0, 1.0)),
            "change": {**over_seeds(change, bounds=(-1.0, 1.0)), "seeds": change}}

