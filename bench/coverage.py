"""Coverage of DCV's 95% intervals on synthetic head effects whose DCV is known.

    python bench/coverage.py [--sims 1000] [--seeds 3 ...] [--pairs 32] [--boot 400] [--seed 0] [--regime seeds pairs]

Each simulation draws one capability's probe pairs and two arms of `--seeds` runs, with the crossed structure of the
real design: a pair effect shared by the base and every run (pairs are the same prompts for every model), an
arm-by-pair effect shared by an arm's runs, a seed effect per run (its overall degradation, and each head's own),
and per-model noise; two regimes, one where the seeds' variance dominates and one where the pairs' does. Arm x's runs degrade the base
effects by d_x on average, so the population DCV (the mean over seeds of CV with infinitely many pairs) is
d_a - d_b exactly. Each interval of `dcv.scoring.dcv.intervals` is computed from the library's own code (the shared
pair draws of `pair_draws`, seeds resampled on top) and checked for covering that value; so is the interval the
pipeline printed before (pairs drawn afresh for every seed slot, seeds resampled, percentile). Printed: the measured
coverage of each at nominal 95%, and the median width.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SHAPE = (2, 4)
MU = np.array([[0.05, -1.2, 0.03, -0.02], [0.6, 0.01, -2.0, 0.04]])  # base effects; C0 = the three large heads
C0 = ((1, 2), (0, 1), (1, 0))
DEGRADE = {"a": 0.45, "b": 0.15}  # true DCV = 0.30


def _circuit(model: str, per_pair: np.ndarray):
    from dcv.scoring.circuits import Circuit

    eff = per_pair.mean(0)
    return Circuit(model=model, capability="sim", method="exact", effects=eff, effects_per_pair=per_pair,
                   abs_effects=np.abs(per_pair).mean(0), faithfulness={}, base_order=list(C0), base_k=[3],
                   base_f=[1.0], cross_effects=None, cross_effects_per_pair=None, path=Path("sim"))


REGIMES = {  # standard deviations of each source of variation
    "seeds": {"seed_sd": 0.06, "head_sd": 0.08, "pair_sd": 0.5, "arm_pair_sd": 0.1, "noise_sd": 0.15},
    "pairs": {"seed_sd": 0.01, "head_sd": 0.01, "pair_sd": 0.5, "arm_pair_sd": 0.6, "noise_sd": 0.15},
}


def simulate(rng: np.random.Generator, n_seeds: int, n_pairs: int, seed_sd: float, head_sd: float, pair_sd: float,
             arm_pair_sd: float, noise_sd: float):
    """(base Circuit, {arm: [Circuit per run]}) of one simulated capability. Sources: a pair effect shared by every
    model (alpha), an arm-by-pair effect shared by an arm's runs (how the arm changed the heads on that prompt),
    a run's overall degradation and each head's own, and per-model noise."""
    scale = np.abs(MU) + 0.05
    alpha = rng.normal(0.0, pair_sd, (n_pairs, *SHAPE)) * scale  # [pair, layer, head], shared by every model
    base = _circuit("base", MU + alpha + rng.normal(0.0, noise_sd, (n_pairs, *SHAPE)))
    runs = {}
    for arm, d in DEGRADE.items():
        beta = rng.normal(0.0, arm_pair_sd, (n_pairs, *SHAPE)) * scale * d  # [pair, layer, head], this arm's
        runs[arm] = []
        for s in range(n_seeds):
            r = 1.0 - d - rng.normal(0.0, seed_sd)  # the run's overall scale
            head = 1.0 + rng.normal(0.0, head_sd, SHAPE)  # each head's own deviation in this run
            pp = MU * r * head + alpha * r - beta * np.sign(MU) + rng.normal(0.0, noise_sd, (n_pairs, *SHAPE))
            runs[arm].append(_circuit(f"{arm}/seed-{s}/step-1", pp))
    return base, runs


def nested_ci(base, runs, n_boot: int, rng: np.random.Generator) -> dict:
    """The interval printed before: each seed slot draws its own pair weights; seeds resampled; percentile."""
    from dcv.bootstrap import ci95, pair_weights, seed_draws
    from dcv.scoring.dcv import _cv_flat

    mask = np.zeros(SHAPE, bool)
    for l, h in C0:
        mask[l, h] = True
    n = len(runs["a"])
    w = pair_weights(rng, base.n_pairs, (n_boot, n))  # [draw, slot, pair]
    e0 = w @ base.effects_per_pair.reshape(base.n_pairs, -1)[:, mask.ravel()]  # [draw, slot, k]
    cv = {}
    for arm in ("a", "b"):
        idx = seed_draws(rng, n, (n_boot, n))
        x = np.stack([c.effects_per_pair.reshape(c.n_pairs, -1)[:, mask.ravel()] for c in runs[arm]])  # [run, pair, k]
        ex = np.einsum("dsp,rpk->dsrk", w, x)
        ex = np.take_along_axis(ex, idx[:, :, None, None], axis=2)[:, :, 0]
        cv[arm] = _cv_flat(e0, ex).mean(1)
    return ci95(cv["a"] - cv["b"])


def coverage(n_sims: int, n_seeds: int, n_pairs: int, n_boot: int, seed: int, regime: str = "seeds",
             nested: bool = True) -> dict:
    """Measured coverage and median width of each interval over `n_sims` simulations."""
    from dcv.bootstrap import seed_draws
    from dcv.scoring.dcv import Run, intervals, pair_draws
    from dcv.scoring.measures import BaseCircuit, circuit_vulnerability

    truth = DEGRADE["a"] - DEGRADE["b"]
    c0 = BaseCircuit("sim", C0, 1.0, 0.8, True, n_heads=8)
    names = ["ci95", "ci95_bootstrap", "ci95_seeds"] + (["nested (before)"] if nested else [])
    hits = {k: 0 for k in names}
    widths = {k: [] for k in names}
    rng = np.random.default_rng(seed)
    arms = ("a", "b")
    for _ in range(n_sims):
        base, models = simulate(rng, n_seeds, n_pairs, **REGIMES[regime])
        runs = {"sim": {a: [Run.of(s, c) for s, c in enumerate(models[a])] for a in arms}}
        idx = {a: seed_draws(rng, n_seeds, (n_boot, n_seeds)) for a in arms}
        draws = pair_draws({"sim": base}, {"sim": c0}, runs, arms, n_boot, rng)["sim"]
        mask = c0.mask(SHAPE)
        per_seed = {a: np.array([float(circuit_vulnerability(base.effects, c.effects, mask)) for c in models[a]])
                    for a in arms}
        res = intervals(per_seed, draws, idx, arms, {a: list(range(n_seeds)) for a in arms}, rng, 99)
        got = {k: res[k] for k in ("ci95", "ci95_bootstrap", "ci95_seeds")}
        if nested:
            got["nested (before)"] = nested_ci(base, models, n_boot, rng)
        for k, ci in got.items():
            if np.isfinite(ci["low"]) and ci["low"] <= truth <= ci["high"]:
                hits[k] += 1
            widths[k].append(ci["high"] - ci["low"])
    return {k: {"coverage": hits[k] / n_sims, "median_width": float(np.nanmedian(widths[k]))} for k in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--boot", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--regime", nargs="+", default=list(REGIMES), choices=list(REGIMES),
                    help="seeds: the seed variance dominates; pairs: the arm-by-pair variance dominates")
    a = ap.parse_args()
    print(f"true DCV {DEGRADE['a'] - DEGRADE['b']:.2f}; {a.sims} simulations, {a.pairs} pairs, {a.boot} draws; "
          f"nominal 95%")
    for regime in a.regime:
        for n in a.seeds:
            res = coverage(a.sims, n, a.pairs, a.boot, a.seed, regime)
            for k, v in res.items():
                print(f"{regime:<6} seeds {n}  {k:<16} coverage {v['coverage']:.3f}  median width {v['median_width']:.3f}")


if __name__ == "__main__":
    main()
