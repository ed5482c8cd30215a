"""Differential circuit vulnerability DCV(a, b)(c) = CV^a(c) - CV^b(c), per head and per circuit, with intervals
that account for both sources of noise: the seeds (runs) and the probe pairs, which are crossed (every seed of every
arm, and the base, is measured on the same scoring pairs).

A comparison takes, for each capability and arm, one `Run` per seed: a checkpoint, or at equal target accuracy the
two checkpoints that bracket the level with their interpolation weights (every measure is interpolated linearly in
target accuracy between them; step 0 is the base itself). Point estimates are means over seeds. Per comparison:

- `ci95` (the headline interval): DCV ± t_df * sqrt(V_seed + V_pair). V_seed = s_a²/n_a + s_b²/n_b from the per-seed
  CVs (their spread over seeds, on the full pair set); V_pair = the variance of DCV over draws of one pair-weight
  vector per capability shared by the base and every run (seeds fixed); df by Welch-Satterthwaite (V_pair counts as
  known). With one seed in an arm V_seed is not estimable: the interval is then the pairs-only one, said so in
  `ci95_method`, unless a pooled seed variance is passed in (`seed_var`);
- `ci95_bootstrap`: the percentile interval of the crossed bootstrap (the shared pair vector, and each arm's seeds
  resampled, the same seed picks for every capability). With few seeds it is too narrow (resampling 3 seeds
  understates their variance by (n-1)/n and the percentile ignores t's tails), which `bench/coverage.py` measures;
- `ci95_seeds`: Welch's t interval over the per-seed CVs alone; `permutation`: the exact label-permutation p-value
  over seeds (with 3 seeds per arm the smallest attainable two-sided p is 0.1);
- `per_seed`: each arm's per-seed CV, and `dcv_by_seed` where both arms have the seed.

C0 is chosen on the discovery split and held fixed: the scoring pairs never took part in choosing it, so fixing it
is honest (the intervals are conditional on C0, which is what DCV is defined on).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dcv.bootstrap import ci95, pair_weights, seed_draws, variance
from dcv.scoring.circuits import Circuit
from dcv.scoring.measures import BaseCircuit, ModelScore, score_model
from dcv.stats import count_undefined, mean, permutation_test, sign_flip_test, t_interval, welch

ARM_MEASURES = ("cv", "preserved", "rank_correlation", "faithfulness_retained", "cross_model_cv", "logit_diff_drop")


@dataclass(frozen=True)
class Run:
    """One seed's model in a comparison: checkpoints (Circuit files of one capability) and their weights (sum 1)."""

    seed: int
    terms: tuple[tuple[Circuit, float], ...]

    @classmethod
    def of(cls, seed: int, circuit: Circuit) -> Run:
        return cls(seed, ((circuit, 1.0),))


def combine(scores: list[ModelScore], weights: list[float]) -> ModelScore:
    """The weighted combination of measures (linear interpolation between checkpoints); a None measure in any term
    of non-zero weight gives None."""
    if len(scores) == 1:
        return scores[0]

    def lin(get):
        vals = [get(s) for s in scores]
        if any(v is None for v, w in zip(vals, weights) if w):
            return None
        return sum(w * v for v, w in zip(vals, weights) if w)

    return ModelScore(cv=lin(lambda s: s.cv), v=lin(lambda s: s.v), preserved=lin(lambda s: s.preserved),
                      rank_correlation=lin(lambda s: s.rank_correlation),
                      faithfulness_retained=lin(lambda s: s.faithfulness_retained),
                      cross_model=lin(lambda s: s.cross_model), cross_model_cv=lin(lambda s: s.cross_model_cv),
                      logit_diff_drop=lin(lambda s: s.logit_diff_drop))


def score_run(base: Circuit, c0: BaseCircuit, run: Run, min_signal: float) -> ModelScore:
    return combine([score_model(base, c0, x, min_signal) for x, _ in run.terms], [w for _, w in run.terms])


@dataclass
class Comparison:
    """Result of one comparison: `summary` (JSON-able, the metrics) and per-capability head maps (plot data)."""

    summary: dict
    maps: dict[str, dict] = field(default_factory=dict)
    scores: dict[str, dict[str, list[ModelScore]]] = field(default_factory=dict)


def _cv_flat(e0: np.ndarray, ex: np.ndarray) -> np.ndarray:
    """CV over the last axis (C0's heads): e0, ex [..., k] -> [...]."""
    a0 = np.abs(e0)
    return (a0 - np.sign(e0) * ex).sum(-1) / a0.sum(-1)


def pair_draws(bases: dict[str, Circuit], c0s: dict[str, BaseCircuit], runs: dict[str, dict[str, list[Run]]],
               arms: tuple[str, ...], n_boot: int, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """capability -> arm -> [draw, run] CV of each run under one pair-weight vector per draw, shared by the base
    and every run of every arm (the crossed design); seeds are not resampled here."""
    out = {}
    for cap in sorted(bases):
        b = bases[cap]
        mask = c0s[cap].mask(b.shape).ravel()
        w = pair_weights(rng, b.n_pairs, (n_boot,))  # [draw, pair]
        e0 = w @ b.effects_per_pair.reshape(b.n_pairs, -1)[:, mask]  # [draw, k]
        out[cap] = {}
        for a in arms:
            cols = []
            for run in runs[cap][a]:
                cv = np.zeros(n_boot)
                for x, wt in run.terms:
                    if wt:
                        cv += wt * _cv_flat(e0, w @ x.effects_per_pair.reshape(x.n_pairs, -1)[:, mask])
                cols.append(cv)
            out[cap][a] = np.stack(cols, axis=1)  # [draw, run]
    return out


def intervals(per_seed: dict[str, np.ndarray], draws: dict[str, np.ndarray], idx: dict[str, np.ndarray],
              arms: tuple[str, str], seeds: dict[str, list[int]], rng: np.random.Generator, n_perm: int,
              seed_var: dict[str, tuple[float, float]] | None = None) -> dict:
    """Every interval of one DCV (see the module docstring). per_seed: arm -> [run] CV on the full pairs; draws:
    arm -> [draw, run] CV under shared pair draws; idx: arm -> [draw, run] seed picks of the crossed bootstrap;
    seed_var: arm -> (variance of one run's CV, its df) for arms whose own seeds cannot estimate it."""
    a, b = arms
    cv = {x: float(np.mean(per_seed[x])) for x in arms}
    d = cv[a] - cv[b]
    comps, known = [], True
    for x in arms:
        n = len(per_seed[x])
        if seed_var and x in seed_var:
            comps.append((seed_var[x][0] / n, seed_var[x][1]))
        elif n > 1:
            comps.append((float(np.var(per_seed[x], ddof=1)) / n, n - 1.0))
        else:
            known = False
    v_pair = variance(draws[a].mean(1) - draws[b].mean(1))
    ci = t_interval(d, comps + [(v_pair, float("inf"))]) if known else t_interval(d, [(v_pair, float("inf"))])
    crossed = {x: np.take_along_axis(draws[x], idx[x], axis=1).mean(1) for x in arms}
    arm_ci = {}
    for x in arms:
        n = len(per_seed[x])
        own = ([(seed_var[x][0] / n, seed_var[x][1])] if seed_var and x in seed_var else
               [(float(np.var(per_seed[x], ddof=1)) / n, n - 1.0)] if n > 1 else [])
        arm_ci[x] = {k: v for k, v in t_interval(cv[x], own + [(variance(draws[x].mean(1)), float("inf"))]).items()
                     if k in ("low", "high")}
    by_seed = {x: {str(s): float(v) for s, v in zip(seeds[x], per_seed[x])} for x in arms}
    common = [s for s in seeds[a] if s in seeds[b]]
    return {
        "dcv": d,
        "ci95": {"low": ci["low"], "high": ci["high"]},
        "ci95_method": ("t: seeds and probe pairs" if known else
                        "pairs only (one seed: the seed variance is not estimable)"),
        "se": ci["se"], "df": ci["df"],
        "ci95_bootstrap": ci95(crossed[a] - crossed[b]),
        "ci95_seeds": {k: v for k, v in welch(per_seed[a], per_seed[b]).items() if k in ("low", "high")},
        "permutation": permutation_test(list(per_seed[a]), list(per_seed[b]), rng, n_perm),
        "cv_ci95": arm_ci,
        "per_seed": by_seed,
        "dcv_by_seed": {str(s): by_seed[a][str(s)] - by_seed[b][str(s)] for s in common},
    }


def _maps(c0: BaseCircuit, base: Circuit, scores: dict[str, list[ModelScore]], arms: tuple[str, str]) -> dict:
    v = {a: np.mean([s.v for s in scores[a]], axis=0) for a in arms}
    cross = {a: np.mean([s.cross_model for s in scores[a]], axis=0) if all(s.cross_model is not None for s in scores[a])
             else None for a in arms}
    return {"v": v, "dcv": v[arms[0]] - v[arms[1]], "cross_model": cross, "base_effects": base.effects,
            "base_circuit": [list(h) for h in c0.heads], "unstable": [list(h) for h in sorted(c0.unstable)]}


def _heads(c0: BaseCircuit, base: Circuit, maps: dict, arms: tuple[str, str]) -> dict:
    """Per head of C0 (keys `L<layer>H<head>`): base effect, weight, v_h per arm, DCV_h, cross-model effect, and
    the guards' reasons when the head is unstable (its ratios then undefined)."""
    total = float(sum(abs(base.effects[l, h]) for l, h in c0.heads))
    out = {}
    for l, h in c0.heads:
        d = {"base_effect": float(base.effects[l, h]), "weight": abs(float(base.effects[l, h])) / total,
             "v": {a: float(maps["v"][a][l, h]) for a in arms}, "dcv": float(maps["dcv"][l, h])}
        if all(maps["cross_model"][a] is not None for a in arms):
            d["cross_model"] = {a: float(maps["cross_model"][a][l, h]) for a in arms}
        if (l, h) in c0.unstable:
            d["unstable"] = list(c0.unstable[(l, h)])
        out[f"L{l}H{h}"] = d
    return out


def _measures(scores: dict[str, list[ModelScore]], arms) -> dict:
    s = {m: {a: mean(getattr(sc, m) for sc in scores[a]) for a in arms} for m in ARM_MEASURES}
    undefined = {m: {a: count_undefined(getattr(sc, m) for sc in scores[a]) for a in arms} for m in ARM_MEASURES}
    undefined = {m: v for m, v in undefined.items() if any(v.values())}
    if undefined:
        s["undefined"] = undefined  # seeds whose value is NaN (left out of the mean), per measure and arm
    return s


def compare(bases: dict[str, Circuit], c0s: dict[str, BaseCircuit], runs: dict[str, dict[str, list[Run]]],
            arms: tuple[str, str], n_boot: int, rng: np.random.Generator, n_perm: int = 9999,
            min_signal: float = 0.1, seed_var: dict[str, dict[str, tuple[float, float]]] | None = None) -> Comparison:
    """DCV per capability and its mean over capabilities, with every interval; measures per arm. `runs`:
    capability -> arm -> [Run] (the same seeds, in the same order, for every capability). `seed_var`: capability
    (or `mean`) -> arm -> (variance of one run's CV, df), for arms whose own seeds cannot estimate it."""
    seed_var = seed_var or {}
    caps = sorted(bases)
    seeds = {a: [r.seed for r in runs[caps[0]][a]] for a in arms}
    idx = {a: seed_draws(rng, len(seeds[a]), (n_boot, len(seeds[a]))) for a in arms}  # shared by every capability
    draws = pair_draws(bases, c0s, runs, arms, n_boot, rng)
    res = Comparison(summary={"capabilities": {}})
    per_seed_caps = {a: [] for a in arms}
    for cap in caps:
        scores = {a: [score_run(bases[cap], c0s[cap], r, min_signal) for r in runs[cap][a]] for a in arms}
        res.scores[cap] = scores
        maps = _maps(c0s[cap], bases[cap], scores, arms)
        res.maps[cap] = maps
        per_seed = {a: np.array([s.cv for s in scores[a]]) for a in arms}
        for a in arms:
            per_seed_caps[a].append(per_seed[a])
        s = _measures(scores, arms)
        s.update(intervals(per_seed, draws[cap], idx, arms, seeds, rng, n_perm, seed_var.get(cap)))
        s["heads"] = _heads(c0s[cap], bases[cap], maps, arms)
        res.summary["capabilities"][cap] = s
    per = res.summary["capabilities"]
    m = {k: {a: mean(per[c][k][a] for c in caps) for a in arms} for k in ARM_MEASURES}
    mean_seed = {a: np.mean(per_seed_caps[a], axis=0) for a in arms}  # [run]: each seed's mean over capabilities
    mean_draws = {a: np.mean([draws[c][a] for c in caps], axis=0) for a in arms}
    m.update(intervals(mean_seed, mean_draws, idx, arms, seeds, rng, n_perm, seed_var.get("mean")))
    res.summary["mean"] = m
    return res


# ---- sanity: tests whose outcome is known --------------------------------------------------------------------------

def pair_differences(base: Circuit, c0: BaseCircuit, a: Circuit, b: Circuit) -> np.ndarray:
    """[pair] d_p with mean_p d_p = CV^a - CV^b (e0 fixed): d_p = sum_{C0} sign(e0) (e^b_p - e^a_p) / sum_{C0} |e0|.
    Swapping the two models' labels on pair p flips the sign of d_p."""
    mask = c0.mask(base.shape).ravel()
    e0 = base.effects.ravel()[mask]
    ea = a.effects_per_pair.reshape(a.n_pairs, -1)[:, mask]
    eb = b.effects_per_pair.reshape(b.n_pairs, -1)[:, mask]
    return (np.sign(e0) * (eb - ea)).sum(-1) / np.abs(e0).sum()


def pair_permutation(bases: dict[str, Circuit], c0s: dict[str, BaseCircuit], a: dict[str, Circuit],
                     b: dict[str, Circuit], rng: np.random.Generator, n_perm: int = 9999) -> dict:
    """Label-permutation test of DCV(a, b) (mean over capabilities) between two single models measured on the same
    probe pairs: labels swapped within each pair (a sign flip), pairs of every capability flipped independently.
    It ignores seed variance: it asks whether these two models differ, not whether their arms do."""
    return sign_flip_test([pair_differences(bases[c], c0s[c], a[c], b[c]) for c in sorted(bases)], rng, n_perm)


# ---- equal target accuracy -----------------------------------------------------------------------------------------

def bracket(curve: dict[int, float], level: float) -> dict | None:
    """Where a seed's accuracy curve (step -> target accuracy, step 0 = the base) first reaches `level`: the two
    checkpoints around it and their interpolation weights, and `gap`, the distance in accuracy from the level to
    the nearer of the two (how far the interpolation reaches from a measured model). None: the curve never gets
    there (the level is outside this seed's range)."""
    pts = sorted(curve.items())
    for (s1, a1), (s2, a2) in zip(pts, pts[1:]):
        if min(a1, a2) <= level <= max(a1, a2):
            lam = 0.0 if a2 == a1 else (level - a1) / (a2 - a1)
            terms = [(s, w) for s, w in ((s1, 1.0 - lam), (s2, lam)) if w > 0]
            return {"terms": terms, "gap": float(min(abs(level - a1), abs(a2 - level))),
                    "steps": [s1, s2], "accuracies": [a1, a2]}
    if len(pts) == 1 and pts[0][1] == level:
        return {"terms": [(pts[0][0], 1.0)], "gap": 0.0, "steps": [pts[0][0]] * 2, "accuracies": [level] * 2}
    return None


def accuracy_levels(base_accuracy: float, curves: dict[str, dict[int, dict[int, float]]], n: int = 3) -> list[float]:
    """n levels evenly spaced above the base's target accuracy up to the highest one that every seed of every arm
    reaches (curves: arm -> seed -> step -> accuracy); none when some seed never gets above the base."""
    top = min(max(c.values()) for seeds in curves.values() for c in seeds.values())
    if top <= base_accuracy:
        return []
    return [round(base_accuracy + (top - base_accuracy) * (i + 1) / n, 6) for i in range(n)]
