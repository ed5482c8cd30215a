"""Least-squares fits and the verdict of the report, every sentence phrased from the numbers it is given."""

from __future__ import annotations

import math

WEAK_R2 = 0.1  # below this, a linear fit is said to explain little of the variance


def r_squared(x: list[float], y: list[float]) -> dict:
    """Ordinary least squares y = a + b x: R^2, slope, intercept and n (R^2 NaN with < 3 points or constant x)."""
    from dcv.stats import ols

    return ols(x, y)


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


def r2_text(d: dict) -> str:
    return f"{fmt(d['r2'], 2)} [{fmt(d['ci95'].get('low'), 2)}, {fmt(d['ci95'].get('high'), 2)}]"


def predictor_verdict(table: dict, level: str) -> str:
    """Does CV earn its place? It must explain forgetting (measured on the forgetting split) better than the clean
    logit-difference drop on the same scoring pairs CV is computed on, pooled and with an arm fixed effect."""
    p = table["predictors"]
    cmp = table["cv_vs_logit_diff_drop"]
    unit = "checkpoint and capability" if level == "capability" else "checkpoint (means over capabilities)"
    base = (f"Per {unit} ({table['n_points']} points from {table['n_runs']} runs; 95% intervals resample whole runs), "
            f"forgetting on the forgetting split is explained by circuit vulnerability CV with R² = "
            f"{r2_text(p['cv']['pooled'])} pooled and {r2_text(p['cv']['arm_fe'])} within arms (arm fixed effect), "
            f"by the clean logit-difference drop on the same scoring pairs with {r2_text(p['logit_diff_drop']['pooled'])} "
            f"and {r2_text(p['logit_diff_drop']['arm_fe'])}, by forward KL with {r2_text(p['forward_kl']['pooled'])} "
            f"and {r2_text(p['forward_kl']['arm_fe'])}, by the weights' distance to the base with "
            f"{r2_text(p['param_distance']['pooled'])} and {r2_text(p['param_distance']['arm_fe'])}")
    words = {"beats": "exceeds", "loses": "falls short of", "unresolved": "is not resolved from"}
    parts = [f"{name} CV's R² {words[cmp[k]['verdict']]} the logit-difference drop's (difference "
             f"{fmt(cmp[k]['delta_r2'], 2)} [{fmt(cmp[k]['ci95'].get('low'), 2)}, {fmt(cmp[k]['ci95'].get('high'), 2)}])"
             for k, name in (("pooled", "Pooled,"), ("arm_fe", "within arms,"))]
    earns = all(cmp[k]["verdict"] == "beats" for k in ("pooled", "arm_fe"))
    tail = ("so CV earns its place as a predictor beyond the plain drop in logit difference" if earns else
            "so CV does not earn its place beyond the plain drop in logit difference here")
    return base + ". " + "; ".join(parts) + f": {tail}."
