"""Forgetting and adaptation of each arm, summarised from the measurement table (`dcv.measurements`).

- forgetting of a model: accuracy(M0) - accuracy(Mx) per prior capability, and its mean over capabilities;
- adaptation speed: the first checkpoint step at which the target accuracy has covered `adaptation_fraction` of the
  way from the base's accuracy to the arm's final accuracy (None when the arm ends no better than the base);
- curves over steps: mean, min and max over seeds at each step that every seed has (seeds are aligned by step, not
  by list position: a seed with an extra checkpoint adds no point to the curve).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dcv.errors import DcvError
from dcv.evaluation import MeasureConfig
from dcv.layout import BASE
from dcv.lm_eval_bridge import LMEvalConfig
from dcv.measurements import LM_EVAL, MeasurementTable
from dcv.stats import finite, mean, sd

CURVE_KEYS = ("target_accuracy", "prior_accuracy", "forgetting", "forward_kl", "forward_kl_seq", "param_distance")


class ForgettingConfig(BaseModel):
    """Stage `evaluate-forgetting`: how every model is measured, and the adaptation threshold."""

    model_config = ConfigDict(extra="forbid", strict=True)

    adaptation_fraction: float = Field(0.9, gt=0.0, le=1.0, description="Adaptation speed: steps until the target accuracy covers this fraction of the way from the base's to the arm's final accuracy.")
    eval: MeasureConfig = Field(default_factory=MeasureConfig)
    lm_eval: LMEvalConfig = Field(default_factory=LMEvalConfig)


def adaptation_step(curve: list[tuple[int, float]], fraction: float) -> int | None:
    """First step whose accuracy reaches base + fraction * (final - base); `curve` starts at step 0 (the base)."""
    (_, a0), (_, af) = curve[0], curve[-1]
    if af <= a0:
        return None
    threshold = a0 + fraction * (af - a0)
    return next(step for step, a in curve if a >= threshold - 1e-12)


def point(t: MeasurementTable, mid: str) -> dict:
    """One model's figures: target accuracy, prior accuracy, forgetting, both KLs, and per capability."""
    first, f = t.first(mid), t.forgetting(mid)
    rows = t.model(mid)
    return {"target_accuracy": first.target_accuracy, "prior_accuracy": t.prior_accuracy(mid),
            "forgetting": f["mean"], "forward_kl": first.forward_kl, "forward_kl_seq": first.forward_kl_seq,
            "param_distance": first.param_distance, "target_top_letter": first.target_top_letter,
            "capabilities": {c: {"accuracy": rows[c].accuracy, "logit_diff": rows[c].logit_diff, "forgetting": f[c]}
                             for c in t.capabilities}}


def summarize_arm(t: MeasurementTable, arm: str, seeds: list[int], fraction: float) -> dict:
    """Per seed every checkpoint (step 0 = the model it started from: the base, or the checkpoint of the arm it
    continues) and its adaptation step; over seeds the final values (mean, sample SD) and the curve (mean, min, max
    at each step every seed has)."""
    per_seed = {}
    for s in seeds:
        steps = t.steps(arm, s)
        if not steps:
            raise DcvError(f"{t.path}: no checkpoints of arm {arm}, seed {s}")
        rows = [{"step": st, **point(t, t.checkpoint(arm, s, st))} for st in [0] + steps]
        per_seed[s] = {"start": t.start(arm, s), "checkpoints": rows,
                       "adaptation_steps": adaptation_step([(r["step"], r["target_accuracy"]) for r in rows], fraction)}
    finals = [v["checkpoints"][-1] for v in per_seed.values()]
    common = sorted(set.intersection(*({r["step"] for r in v["checkpoints"]} for v in per_seed.values())))
    curve = []
    for st in common:
        at = [next(r for r in v["checkpoints"] if r["step"] == st) for v in per_seed.values()]
        p = {"step": st}
        for k in CURVE_KEYS:
            vals = finite(r[k] for r in at)  # None (not measured) and NaN are left out
            p.update({k: mean(vals), f"{k}_min": min(vals, default=float("nan")), f"{k}_max": max(vals, default=float("nan"))})
        curve.append(p)
    adapt = [v["adaptation_steps"] for v in per_seed.values()]
    caps = t.capabilities
    return {
        **{k: mean(f[k] for f in finals) for k in CURVE_KEYS},
        "forgetting_sd": sd(f["forgetting"] for f in finals),
        "final_steps": {str(s): v["checkpoints"][-1]["step"] for s, v in per_seed.items()},
        "capabilities": {c: {k: mean(f["capabilities"][c][k] for f in finals) for k in ("accuracy", "logit_diff", "forgetting")}
                         for c in caps},
        "adaptation_steps": mean(adapt) if any(a is not None for a in adapt) else None,
        "adapted_seeds": sum(a is not None for a in adapt),
        "curve": curve,
        "seeds": {str(s): v for s, v in per_seed.items()},
    }


def lm_eval_drops(t: MeasurementTable, arm: str, seeds: list[int]) -> dict[str, float]:
    """Per lm-eval benchmark metric: base score minus the arm's final score, mean over seeds."""
    base = {c: r.accuracy for c, r in t.model(BASE).items() if c.startswith(LM_EVAL)}
    out = {}
    for c, b in sorted(base.items()):
        finals = [t.model(t.checkpoint(arm, s, t.steps(arm, s)[-1])).get(c) for s in seeds]
        out[c.removeprefix(LM_EVAL)] = mean(b - r.accuracy for r in finals if r is not None)
    return out


def summarize(t: MeasurementTable, arms: list[str], seeds: list[int], fraction: float) -> dict:
    """Metrics of stage evaluate-forgetting: the base's figures and every arm's summary."""
    out = {"base": point(t, BASE), "adaptation_fraction": fraction,
           "arms": {a: summarize_arm(t, a, seeds, fraction) for a in arms}}
    if any(not r.is_prior for r in t.rows):
        out["lm_eval"] = {"base": {c.removeprefix(LM_EVAL): r.accuracy for c, r in t.model(BASE).items() if not r.is_prior},
                          "drop": {a: lm_eval_drops(t, a, seeds) for a in arms}}
    return out
