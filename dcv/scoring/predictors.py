"""Which measure predicts forgetting? Every predictor against forgetting, with baselines, and intervals clustered by
run (docs/design.md, "What predicts forgetting").

Predictors are registered entries (`PREDICTORS`): circuit vulnerability CV and the clean logit-difference drop
(both on the scoring split), forward KL on the target eval prompts, and the L2 distance of the weights to the base.
Forgetting is measured on the forgetting split, disjoint from the scoring pairs, so neither CV nor the logit-
difference drop shares its pairs with what it predicts. CV earns its place only if it explains forgetting better
than the logit-difference drop, the plain quantity it is close to.

For each predictor and each level (`model`: one point per checkpoint, means over capabilities; `capability`: one
point per checkpoint and capability, model-level predictors repeated): R² pooled over every arm, within each arm,
and with an arm fixed effect (the within R²: what the predictor explains of forgetting around each arm's mean). A
run's checkpoints are not independent points, so each R² has a 95% interval from resampling whole runs (arm, seed)
with replacement within each arm; the differences of R² between CV and the logit-difference drop come from the same
resamples (paired).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcv.bootstrap import ci95
from dcv.stats import cluster_resamples, ols, within_r2


@dataclass(frozen=True)
class Predictor:
    name: str  # the point's key
    label: str
    source: str  # what it is computed on


PREDICTORS = (
    Predictor("cv", "circuit vulnerability CV", "scoring split"),
    Predictor("logit_diff_drop", "clean logit-difference drop 1 − LD(Mx)/LD(M0)", "scoring split"),
    Predictor("forward_kl", "forward KL on the target prompts", "target eval prompts"),
    Predictor("param_distance", "L2 distance of the weights to the base", "weights"),
)
CANDIDATE, BASELINE = "cv", "logit_diff_drop"  # CV must beat this baseline
LEVELS = ("model", "capability")


def _r2(kind: str, x: np.ndarray, y: np.ndarray, g: np.ndarray) -> float:
    return ols(x, y)["r2"] if kind == "pooled" else within_r2(x, y, g)["r2"]


def _column(points: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if p.get(key) is None else float(p[key]) for p in points], dtype=np.float64)


def fit_table(points: list[dict], arms: list[str], n_boot: int, rng: np.random.Generator) -> dict:
    """R² of forgetting against every predictor: pooled, within each arm, with an arm fixed effect, each with a
    run-clustered 95% interval; and CV's R² minus the logit-difference drop's, pooled and with the fixed effect."""
    y = _column(points, "forgetting")
    g = np.array([p["arm"] for p in points], dtype=object)
    runs = [p.get("run", (p["arm"], p["seed"])) for p in points]  # a cluster: one run (a sweep adds the experiment)
    res = cluster_resamples(runs, list(g), n_boot, rng) if points else []
    xs = {pr.name: _column(points, pr.name) for pr in PREDICTORS}
    out: dict = {"order": [pr.name for pr in PREDICTORS], "n_points": len(points), "n_runs": len(set(runs)),
                 "runs_per_arm": {a: len({r for r, q in zip(runs, points) if q["arm"] == a}) for a in arms}, "predictors": {}}
    samples: dict = {}
    for pr in PREDICTORS:
        x = xs[pr.name]
        d: dict = {"label": pr.label, "source": pr.source}
        for kind in ("pooled", "arm_fe"):
            pt = ols(x, y) if kind == "pooled" else within_r2(x, y, g)
            boot = np.array([_r2(kind, x[i], y[i], g[i]) for i in res])
            samples[(pr.name, kind)] = boot
            d[kind] = {"r2": pt["r2"], "slope": pt["slope"], "n": pt["n"], "ci95": ci95(boot)}
        d["within"] = {}
        for a in arms:
            m = g == a
            pt = ols(x[m], y[m])
            boot = np.array([ols(x[i][g[i] == a], y[i][g[i] == a])["r2"] for i in res])
            d["within"][a] = {"r2": pt["r2"], "slope": pt["slope"], "n": pt["n"], "ci95": ci95(boot)}
        out["predictors"][pr.name] = d
    out["cv_vs_logit_diff_drop"] = {}
    for kind in ("pooled", "arm_fe"):
        c, b = out["predictors"][CANDIDATE][kind]["r2"], out["predictors"][BASELINE][kind]["r2"]
        ci = ci95(samples[(CANDIDATE, kind)] - samples[(BASELINE, kind)])
        out["cv_vs_logit_diff_drop"][kind] = {"delta_r2": c - b, "ci95": ci, "verdict": verdict(c - b, ci)}
    return out


def verdict(delta: float, ci: dict) -> str:
    """`beats` (the interval of CV's R² minus the baseline's lies above 0), `loses` (below), `unresolved`."""
    lo, hi = ci.get("low"), ci.get("high")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "unresolved"
    return "beats" if lo > 0 else "loses" if hi < 0 else "unresolved"


def analyse(points: dict[str, list[dict]], arms: list[str], n_boot: int, rng: np.random.Generator) -> dict:
    """`fit_table` at each level of `points` (level -> points)."""
    return {level: fit_table(points[level], arms, n_boot, rng) for level in LEVELS if level in points}


def model_points(capability_points: list[dict]) -> list[dict]:
    """One point per checkpoint: forgetting and the capability-level predictors averaged over capabilities
    (NaN-aware), model-level predictors as they are."""
    from dcv.stats import mean

    by: dict = {}
    for p in capability_points:
        by.setdefault((p["arm"], p["seed"], p["step"]), []).append(p)
    out = []
    for (arm, seed, step), ps in sorted(by.items()):
        q = {"model": ps[0]["model"], "arm": arm, "seed": seed, "step": step,
             "forgetting": mean(p["forgetting"] for p in ps)}
        for pr in PREDICTORS:
            q[pr.name] = mean(p.get(pr.name) for p in ps)
        for k in ("target_accuracy", "prior_accuracy"):
            if k in ps[0]:
                q[k] = ps[0][k]
        out.append(q)
    return out
