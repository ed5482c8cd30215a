"""Differential circuit vulnerability DCV(c) = CV^a(c) - CV^b(c) (a = sft, b = rl), per head and per circuit.

A comparison takes, for each capability and arm, one fine-tuned model per seed (the same step for every seed at
equal steps; each seed's checkpoint nearest an accuracy level at equal accuracy). Point estimates are means over
seeds. The 95% CI comes from a hierarchical bootstrap: in each draw every arm's seeds are resampled with
replacement, and within each seed slot the probe pairs are resampled, the same pairs for the base and both arms
(they share the probe set). The base circuit C0 stays fixed (it is chosen on the full probe set); its weights
|e0_h| are recomputed in each draw. The mean over capabilities uses the same seed draws for every capability.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dcv.bootstrap import ci95, pair_weights, seed_draws
from dcv.scoring.circuits import Circuit
from dcv.scoring.measures import BaseCircuit, ModelScore, circuit_vulnerability, score_model

ARM_MEASURES = ("cv", "preserved", "rank_correlation", "faithfulness_retained", "cross_model_cv")


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else float("nan")


@dataclass
class Comparison:
    """Result of one comparison: `summary` (JSON-able, the metrics) and per-capability head maps (plot data)."""

    summary: dict
    maps: dict[str, dict] = field(default_factory=dict)
    scores: dict[str, dict[str, list[ModelScore]]] = field(default_factory=dict)


def bootstrap(bases: dict[str, Circuit], c0s: dict[str, BaseCircuit], runs: dict[str, dict[str, list[Circuit]]],
              arms: tuple[str, str], n_boot: int, rng: np.random.Generator, pooled: bool = False
              ) -> dict[str, dict[str, np.ndarray]]:
    """Bootstrap samples [n_boot] of CV per arm and of DCV, per capability.

    `pooled`: each seed slot draws both arms' models from the pooled runs of both arms (shuffled arm labels).
    """
    caps = sorted(bases)
    n_seeds = {a: len(runs[caps[0]][a]) for a in arms}
    n_slots = max(n_seeds.values())
    if pooled:
        idx = {a: seed_draws(rng, sum(n_seeds.values()), (n_boot, n_slots)) for a in arms}
    else:
        idx = {a: seed_draws(rng, n_seeds[a], (n_boot, n_slots)) for a in arms}
    out = {}
    for cap in caps:
        mask = c0s[cap].mask(bases[cap].shape).ravel()
        base = bases[cap].effects_per_pair.reshape(bases[cap].n_pairs, -1)[:, mask]  # [pair, k]
        w = pair_weights(rng, base.shape[0], (n_boot, n_slots))  # [draw, slot, pair]
        e0 = w @ base  # [draw, slot, k]
        pool = {a: [c.effects_per_pair.reshape(c.n_pairs, -1)[:, mask] for c in runs[cap][a]] for a in arms}
        if pooled:
            every = pool[arms[0]] + pool[arms[1]]
            pool = {a: every for a in arms}
        cv = {}
        for a in arms:
            x = np.einsum("dsp,rpk->dsrk", w, np.stack(pool[a]))  # [draw, slot, run, k]
            ex = np.take_along_axis(x, idx[a][:, :, None, None], axis=2)[:, :, 0]
            cv[a] = circuit_vulnerability(e0[..., None, :], ex[..., None, :], np.ones((1, ex.shape[-1]), bool)).mean(1)
        out[cap] = {"cv": cv, "dcv": cv[arms[0]] - cv[arms[1]]}
    return out


def _maps(c0: BaseCircuit, base: Circuit, scores: dict[str, list[ModelScore]], arms: tuple[str, str]) -> dict:
    v = {a: np.mean([s.v for s in scores[a]], axis=0) for a in arms}
    cross = {a: np.mean([s.cross_model for s in scores[a]], axis=0) if all(s.cross_model is not None for s in scores[a])
             else None for a in arms}
    return {"v": v, "dcv": v[arms[0]] - v[arms[1]], "cross_model": cross, "base_effects": base.effects,
            "base_circuit": [list(h) for h in c0.heads]}


def _heads(c0: BaseCircuit, base: Circuit, maps: dict, arms: tuple[str, str]) -> dict:
    """Per head of C0 (keys `L<layer>H<head>`): base effect, weight, v_h per arm, DCV_h, cross-model effect."""
    total = float(sum(abs(base.effects[l, h]) for l, h in c0.heads))
    out = {}
    for l, h in c0.heads:
        d = {"base_effect": float(base.effects[l, h]), "weight": abs(float(base.effects[l, h])) / total,
             "v": {a: float(maps["v"][a][l, h]) for a in arms}, "dcv": float(maps["dcv"][l, h])}
        if all(maps["cross_model"][a] is not None for a in arms):
            d["cross_model"] = {a: float(maps["cross_model"][a][l, h]) for a in arms}
        out[f"L{l}H{h}"] = d
    return out


def compare(bases: dict[str, Circuit], c0s: dict[str, BaseCircuit], runs: dict[str, dict[str, list[Circuit]]],
            arms: tuple[str, str], n_boot: int, rng: np.random.Generator) -> Comparison:
    """DCV per capability and its mean over capabilities, each with a 95% bootstrap CI; measures per arm."""
    caps = sorted(bases)
    boot = bootstrap(bases, c0s, runs, arms, n_boot, rng)
    res = Comparison(summary={"capabilities": {}})
    for cap in caps:
        scores = {a: [score_model(bases[cap], c0s[cap], x) for x in runs[cap][a]] for a in arms}
        res.scores[cap] = scores
        maps = _maps(c0s[cap], bases[cap], scores, arms)
        res.maps[cap] = maps
        s = {m: {a: _mean(getattr(sc, m) for sc in scores[a]) for a in arms} for m in ARM_MEASURES}
        s["dcv"] = s["cv"][arms[0]] - s["cv"][arms[1]]
        s["ci95"] = ci95(boot[cap]["dcv"])
        s["cv_ci95"] = {a: ci95(boot[cap]["cv"][a]) for a in arms}
        s["heads"] = _heads(c0s[cap], bases[cap], maps, arms)
        res.summary["capabilities"][cap] = s
    per = res.summary["capabilities"]
    mean = {m: {a: _mean(per[c][m][a] for c in caps) for a in arms} for m in ARM_MEASURES}
    mean["dcv"] = _mean(per[c]["dcv"] for c in caps)
    mean["ci95"] = ci95(np.mean([boot[c]["dcv"] for c in caps], axis=0))
    res.summary["mean"] = mean
    return res


def shuffled_ci(bases: dict[str, Circuit], c0s: dict[str, BaseCircuit], runs: dict[str, dict[str, list[Circuit]]],
                arms: tuple[str, str], n_boot: int, rng: np.random.Generator) -> dict:
    """Sanity: the bootstrap CI of the mean DCV with arm labels shuffled (both arms drawn from the pooled runs)."""
    boot = bootstrap(bases, c0s, runs, arms, n_boot, rng, pooled=True)
    ci = ci95(np.mean([boot[c]["dcv"] for c in sorted(bases)], axis=0))
    return {"ci95": ci, "covers_zero": bool(ci["low"] <= 0.0 <= ci["high"])}


def nearest_checkpoint(curve: dict[int, float], level: float) -> int:
    """The step whose target accuracy is nearest `level` (ties: the earliest step)."""
    return min(sorted(curve), key=lambda s: abs(curve[s] - level))


def accuracy_levels(base_accuracy: float, mean_curves: dict[str, dict[int, float]], n: int = 3) -> list[float]:
    """n levels evenly spaced from the base's target accuracy to the highest one every arm reaches (mean over
    seeds, over the steps that have circuits); one level when no arm gets above the base."""
    top = min(max(c.values()) for c in mean_curves.values())
    if top <= base_accuracy:
        return [round(top, 6)]
    return [round(base_accuracy + (top - base_accuracy) * (i + 1) / n, 6) for i in range(n)]
