"""Least-squares fits and the verdict of the report, every sentence phrased from the numbers it is given."""

from __future__ import annotations

import math

import numpy as np

WEAK_R2 = 0.1  # below this, a linear fit is said to explain little of the variance


def r_squared(x: list[float], y: list[float]) -> dict:
    """Ordinary least squares y = a + b x: R^2, slope, intercept and n (R^2 NaN with < 3 points or constant x)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    n = int(xa.size)
    if n < 3 or np.ptp(xa) == 0:
        return {"r2": float("nan"), "slope": float("nan"), "intercept": float("nan"), "n": n}
    b, a = np.polyfit(xa, ya, 1)
    ss_res = float(((ya - (a + b * xa)) ** 2).sum())
    ss_tot = float(((ya - ya.mean()) ** 2).sum())
    return {"r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"), "slope": float(b), "intercept": float(a), "n": n}


def fmt(x: float | None, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{nd}f}"


def ci_text(d: float, ci: dict) -> str:
    return f"{fmt(d)} [{fmt(ci.get('low'))}, {fmt(ci.get('high'))}]"


def ci_side(ci: dict) -> str:
    """'above' (low > 0), 'below' (high < 0), 'covers' (contains 0) or 'unknown'."""
    lo, hi = ci.get("low"), ci.get("high")
    if lo is None or hi is None:
        return "unknown"
    return "above" if lo > 0 else "below" if hi < 0 else "covers"


def adaptation_verdict(arms: dict, a: str, b: str, fraction: float) -> tuple[str, bool | None]:
    """Does arm `a` adapt faster than arm `b` (fewer steps to cover `fraction` of its own gain)?"""
    sa, sb = arms[a]["adaptation_steps"], arms[b]["adaptation_steps"]

    def desc(x: str) -> str:
        d = arms[x]
        gain = f"{fmt(d['curve'][0]['target_accuracy'], 2)} → {fmt(d['target_accuracy'], 2)}"
        steps = "never (no gain over the base)" if d["adaptation_steps"] is None else f"by step {d['adaptation_steps']:.0f}"
        return f"{x.upper()} {steps} ({gain})"

    pct = f"{fraction * 100:.0f}%"
    if sa is None and sb is None:
        return f"Neither arm gained target accuracy over the base, so adaptation speed is undefined: {desc(a)}; {desc(b)}.", None
    faster = sb is None or (sa is not None and sa < sb)
    same = sa is not None and sb is not None and sa == sb
    head = (f"{a.upper()} and {b.upper()} adapt equally fast" if same else
            f"{a.upper()} adapts faster" if faster else f"{a.upper()} does not adapt faster")
    return (f"{head}: to cover {pct} of its own gain in target accuracy, {desc(a)}, {desc(b)} "
            f"(means over seeds).", None if same else faster)


def forgetting_verdict(arms: dict, a: str, b: str) -> tuple[str, bool]:
    fa, fb = arms[a]["forgetting"], arms[b]["forgetting"]
    more = fa > fb
    head = f"{a.upper()} forgets more" if more else f"{a.upper()} does not forget more"
    return (f"{head}: the mean drop in prior-capability accuracy at the final step is {fmt(fa)} "
            f"(± {fmt(arms[a]['forgetting_sd'])} over seeds) for {a.upper()} and {fmt(fb)} "
            f"(± {fmt(arms[b]['forgetting_sd'])}) for {b.upper()}.", more)


def dcv_verdict(name: str, dcv: float, ci: dict, n_caps_above: int, n_caps: int, a: str, b: str) -> str:
    side = ci_side(ci)
    if side == "above":
        head = f"DCV > 0 with its 95% CI above 0 {name}"
        tail = f"{a.upper()} degrades the base circuits more than {b.upper()}"
    elif side == "below":
        head = f"DCV < 0 with its 95% CI below 0 {name}"
        tail = f"{b.upper()} degrades the base circuits more than {a.upper()}"
    else:
        head = f"DCV is not distinguishable from 0 {name} (its 95% CI covers 0)"
        tail = "no evidence that either arm degrades the base circuits more"
    return (f"{head}: mean over capabilities {ci_text(dcv, ci)}; {tail}. Per capability, "
            f"{n_caps_above} of {n_caps} CIs lie above 0.")


def predictor_verdict(fit_cv: dict, fit_kl: dict) -> str:
    a, b = fit_cv["r2"], fit_kl["r2"]
    base = (f"Across {fit_cv['n']} checkpoints (all arms and seeds), circuit vulnerability CV explains R² = {fmt(a, 2)} "
            f"of the variance in forgetting and forward KL R² = {fmt(b, 2)}")
    if not (math.isfinite(a) and math.isfinite(b)):
        return base + "; too few points for a comparison."
    if max(a, b) < WEAK_R2:
        return base + f": neither explains much of it (both R² < {WEAK_R2:.2f})."
    better = "circuit vulnerability" if a > b else "forward KL" if b > a else "neither"
    return base + (f": {better} is the better linear predictor of forgetting here." if better != "neither"
                   else ": they predict forgetting equally well here.")
