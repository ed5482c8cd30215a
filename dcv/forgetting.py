"""Forgetting and adaptation (shared/DESIGN.md, "Forgetting"), measured on the base and every checkpoint.

- per model: top-1 accuracy and mean logit difference on each capability's held-out probes (`dcv.probes`), target
  eval accuracy and forward KL E_x KL(pi0 || pi) on the target prompts (`dcv.arms.evaluate.CheckpointEvaluator`,
  the same measurement as the arms' curves);
- forgetting of a model: accuracy(M0) - accuracy(Mx) per capability, and its mean over capabilities;
- adaptation speed: the first checkpoint step at which the target accuracy has covered `adaptation_fraction` of the
  way from the base's accuracy to the arm's final accuracy (None when the arm ends no better than the base).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from dcv.arms.config import CheckpointEvalConfig
from dcv.lm_eval_bridge import LMEvalConfig


class ForgettingConfig(BaseModel):
    """Stage `evaluate-forgetting`: what is measured on every model, and the adaptation threshold."""

    model_config = ConfigDict(extra="forbid", strict=True)

    adaptation_fraction: float = Field(0.9, gt=0.0, le=1.0, description="Adaptation speed: steps until the target accuracy covers this fraction of the way from the base's to the arm's final accuracy.")
    eval: CheckpointEvalConfig = Field(default_factory=CheckpointEvalConfig)
    lm_eval: LMEvalConfig = Field(default_factory=LMEvalConfig)


class ForgettingEvaluator:
    """Holds the probe sets, the target eval rows and the base's answer distribution; call it on a model."""

    def __init__(self, base_model, tok, target_eval: list[dict], probe_sets: dict[str, list[dict]],
                 cfg: CheckpointEvalConfig, probe_dir: Path | str = "probes"):
        from dcv.arms.evaluate import CheckpointEvaluator

        self.tok, self.probe_sets, self.probe_dir = tok, probe_sets, Path(probe_dir)
        self.checkpoint = CheckpointEvaluator(base_model, tok, target_eval, {}, cfg, probe_dir)

    def __call__(self, model) -> dict:
        from dcv.probes import evaluate_probes

        r = self.checkpoint(model)
        caps = {c: evaluate_probes(model, self.tok, rows, where=str(self.probe_dir / f"{c}.jsonl"))
                for c, rows in sorted(self.probe_sets.items())}
        out = {"target_accuracy": r["target_accuracy"], "forward_kl": r["forward_kl"], "capabilities": caps,
               "prior_accuracy": statistics.fmean(v["accuracy"] for v in caps.values())}
        if "forward_kl_seq" in r:
            out["forward_kl_seq"] = r["forward_kl_seq"]
        return out


def forgetting(base: dict, model: dict) -> dict:
    """Per capability accuracy(M0) - accuracy(Mx), and the mean over capabilities (`mean`)."""
    per = {c: base["capabilities"][c]["accuracy"] - v["accuracy"] for c, v in model["capabilities"].items()}
    return {"mean": statistics.fmean(per.values()), "capabilities": per}


def adaptation_step(curve: list[tuple[int, float]], fraction: float) -> int | None:
    """First step whose accuracy reaches base + fraction * (final - base); `curve` starts at step 0 (the base)."""
    (_, a0), (_, af) = curve[0], curve[-1]
    if af <= a0:
        return None
    threshold = a0 + fraction * (af - a0)
    return next(step for step, a in curve if a >= threshold - 1e-12)


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _std(xs: list[float]) -> float:
    return statistics.pstdev(xs) if len(xs) > 1 else 0.0


def summarize(base: dict, runs: dict[str, dict[int, dict[int, dict]]], fraction: float) -> dict:
    """Metrics of stage evaluate-forgetting from the base's and each checkpoint's measurements.

    runs: arm -> seed -> step -> measurement (steps > 0). Final = each seed's last step.
    """
    caps = sorted(base["capabilities"])
    out = {"base": {**base, "forgetting": 0.0}, "adaptation_fraction": fraction, "arms": {}}
    for arm, seeds in runs.items():
        per_seed = {}
        for s, steps in sorted(seeds.items()):
            rows = [{"step": 0, **_row(base, base)}] + [{"step": st, **_row(base, m)} for st, m in sorted(steps.items())]
            per_seed[s] = {"checkpoints": rows,
                           "adaptation_steps": adaptation_step([(r["step"], r["target_accuracy"]) for r in rows], fraction)}
        finals = [v["checkpoints"][-1] for v in per_seed.values()]
        steps = [r["step"] for r in next(iter(per_seed.values()))["checkpoints"]]
        curve = []
        for i, st in enumerate(steps):
            at = [v["checkpoints"][i] for v in per_seed.values()]
            point = {"step": st}
            for k in ("target_accuracy", "prior_accuracy", "forgetting", "forward_kl"):
                vals = [r[k] for r in at]
                point.update({k: statistics.fmean(vals), f"{k}_min": min(vals), f"{k}_max": max(vals)})
            curve.append(point)
        adapt = [v["adaptation_steps"] for v in per_seed.values()]
        out["arms"][arm] = {
            "forgetting": statistics.fmean(f["forgetting"] for f in finals),
            "forgetting_std": _std([f["forgetting"] for f in finals]),
            "target_accuracy": statistics.fmean(f["target_accuracy"] for f in finals),
            "prior_accuracy": statistics.fmean(f["prior_accuracy"] for f in finals),
            "forward_kl": statistics.fmean(f["forward_kl"] for f in finals),
            "capabilities": {c: {k: statistics.fmean(f["capabilities"][c][k] for f in finals)
                                 for k in ("accuracy", "logit_diff", "forgetting")} for c in caps},
            "adaptation_steps": _mean(adapt),
            "adapted_seeds": sum(a is not None for a in adapt),
            "curve": curve,
            "seeds": {str(s): v for s, v in per_seed.items()},
        }
    return out


def _row(base: dict, m: dict) -> dict:
    f = forgetting(base, m)
    row = {"target_accuracy": m["target_accuracy"], "prior_accuracy": m["prior_accuracy"], "forgetting": f["mean"],
           "forward_kl": m["forward_kl"],
           "capabilities": {c: {**v, "forgetting": f["capabilities"][c]} for c, v in m["capabilities"].items()}}
    if "forward_kl_seq" in m:
        row["forward_kl_seq"] = m["forward_kl_seq"]
    return row
