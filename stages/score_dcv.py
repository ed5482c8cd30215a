"""Stage `score-dcv`: circuit vulnerability of every fine-tuned model, and DCV = CV^sft - CV^rl with 95% CIs.

    dcv stage score-dcv [--params params.yaml]

Reads `circuits/` (stage extract-circuits: `base/<cap>.json`, `<arm>/seed-<s>/step-<n>/<cap>.json`) and the arms'
target accuracy curves (`metrics/<arm>.json`, `seeds.<s>.curve`). Two comparisons:

- equal steps: the last step that both arms have circuits for in every seed (the final step under matched
  budgets); this is the headline (`capabilities.<cap>.dcv`, `.ci95`, `.cv.<arm>`, ...);
- equal target accuracy: for each level of `dcv.accuracy_levels` (null: three levels from the base's accuracy up to
  the highest one both arms reach), each seed's checkpoint nearest the level; the highest level is the headline
  (`capabilities.<cap>.equal_accuracy`), every level is in `equal_accuracy.levels`.

Writes `metrics/score-dcv.json` (with a `mean` block over capabilities and `sanity`: DCV of the base against itself,
CV of a circuit with its heads zeroed, the CI with shuffled arm labels) and `plots/dcv/`: `heads/<cap>.json`
(head maps at equal steps), `checkpoints.csv` (every measure of every checkpoint with circuits), `by-step.csv`
(CV per arm and DCV at every common step, means over capabilities and seeds) and `dcv.csv` (DCV and CIs).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, stage

SECTIONS = ["dcv", "common.seeds", "common.experiment"]
CIRCUITS = "circuits"
OUT_METRICS = "metrics/score-dcv.json"
OUT_PLOTS = "plots/dcv"


@dataclass
class Inputs:
    bases: dict  # capability -> Circuit of the base
    circuits: dict  # (arm, seed, step) -> capability -> Circuit
    curves: dict  # arm -> seed -> step -> target accuracy
    base_accuracy: float


def _arm_curves(root: Path, arm: str, seeds: list[int]) -> dict[int, dict[int, float]]:
    path = root / "metrics" / f"{arm}.json"
    if not path.is_file():
        raise DcvError(f"{path}: not found (run stage {arm})")
    m = json.loads(path.read_text())
    out = {}
    for s in seeds:
        try:
            out[s] = {int(c["step"]): float(c["target_accuracy"]) for c in m["seeds"][str(s)]["curve"]}
        except (KeyError, TypeError, ValueError):
            raise DcvError(f"{path}: seeds.{s}.curve: missing or without step/target_accuracy "
                           f"(common.seeds lists seed {s})") from None
    return out


def load_inputs(root: Path, seeds: list[int]) -> Inputs:
    """Every circuits file and curve, checked before the MLflow run opens."""
    from dcv.arms import ARMS
    from dcv.scoring.circuits import BASE, capabilities, check_compatible, checkpoint_steps, circuit_path, load_circuit

    cdir = root / CIRCUITS
    caps = capabilities(cdir)
    bases = {c: load_circuit(circuit_path(cdir, BASE, c)) for c in caps}
    circuits = {}
    for arm in ARMS:
        for s in seeds:
            steps = checkpoint_steps(cdir, arm, s)
            if not steps:
                raise DcvError(f"{cdir / arm / f'seed-{s}'}: no circuits (common.seeds lists seed {s}; run stage extract-circuits)")
            for step in steps:
                d = {c: load_circuit(cdir / arm / f"seed-{s}" / f"step-{step}" / f"{c}.json") for c in caps}
                for c in caps:
                    check_compatible(bases[c], d[c])
                circuits[(arm, s, step)] = d
    curves = {arm: _arm_curves(root, arm, seeds) for arm in ARMS}
    for (arm, s, step) in circuits:
        if step not in curves[arm][s]:
            raise DcvError(f"{root / 'metrics' / f'{arm}.json'}: seeds.{s}.curve: no step {step}, which has circuits")
    base_acc = curves[ARMS[0]][seeds[0]].get(0)
    if base_acc is None:
        raise DcvError(f"{root / 'metrics' / f'{ARMS[0]}.json'}: seeds.{seeds[0]}.curve: no step 0 (the base)")
    return Inputs(bases, circuits, curves, base_acc)


def _runs(inp: Inputs, chosen: dict[str, dict[int, int]]) -> dict:
    """capability -> arm -> [Circuit of each seed's chosen step]."""
    return {c: {a: [inp.circuits[(a, s, chosen[a][s])][c] for s in sorted(chosen[a])] for a in chosen}
            for c in inp.bases}


def _ablated(circuit, mask):
    """A copy of the base circuit whose C0 heads contribute nothing (their effects zeroed): CV must be 1."""
    return replace(circuit, effects=circuit.effects * ~mask, effects_per_pair=circuit.effects_per_pair * ~mask)


def sanity(inp: Inputs, c0s: dict, arms: tuple[str, str], runs: dict, n_boot: int, seed: int) -> dict:
    import numpy as np

    from dcv.scoring.dcv import compare, shuffled_ci
    from dcv.scoring.measures import score_model

    n = len(next(iter(runs.values()))[arms[0]])
    self_runs = {c: {a: [b] * n for a in arms} for c, b in inp.bases.items()}
    self_cmp = compare(inp.bases, c0s, self_runs, arms, n_boot, np.random.default_rng([seed, 2])).summary["mean"]
    ablated = [score_model(b, c0s[c], _ablated(b, c0s[c].mask(b.shape))) for c, b in inp.bases.items()]
    return {
        "self": {"dcv": self_cmp["dcv"], "ci95": self_cmp["ci95"]},
        "base_cv": float(np.mean([score_model(b, c0s[c], b).cv for c, b in inp.bases.items()])),
        "ablated_cv": float(np.mean([s.cv for s in ablated])),
        "ablated_v_min": float(min(np.nanmin(s.v) for s in ablated)),
        "shuffled_arms": shuffled_ci(inp.bases, c0s, runs, arms, n_boot, np.random.default_rng([seed, 3])),
    }


def _head_map(a) -> list:
    return [[None if v != v else float(v) for v in row] for row in a.tolist()]


def run(ctx: StageContext, inp: Inputs) -> dict:
    import numpy as np

    from dcv.arms import ARMS
    from dcv.scoring.dcv import accuracy_levels, compare, nearest_checkpoint
    from dcv.scoring.measures import base_circuit, score_model

    t0 = time.perf_counter()
    cfg, seeds = ctx.params.dcv, list(ctx.params.common.seeds)
    arms = (ARMS[0], ARMS[1])
    c0s = {c: base_circuit(b, cfg.faithfulness_target) for c, b in inp.bases.items()}
    steps = {a: {s: sorted(st for (aa, ss, st) in inp.circuits if aa == a and ss == s) for s in seeds} for a in arms}
    common = sorted(set.intersection(*(set(steps[a][s]) for a in arms for s in seeds)))
    if not common:
        raise DcvError(f"{ctx.path(CIRCUITS)}: no step has circuits for both arms in every seed")
    final = common[-1]

    # Every checkpoint with circuits: each measure, per capability.
    rows = []
    for (a, s, st), d in sorted(inp.circuits.items()):
        for c, x in sorted(d.items()):
            sc = score_model(inp.bases[c], c0s[c], x)
            rows.append({"arm": a, "seed": s, "step": st, "capability": c,
                         "target_accuracy": inp.curves[a][s][st], "cv": sc.cv, "preserved": sc.preserved,
                         "rank_correlation": sc.rank_correlation, "faithfulness_retained": sc.faithfulness_retained,
                         "cross_model_cv": sc.cross_model_cv})

    eq_steps = compare(inp.bases, c0s, _runs(inp, {a: {s: final for s in seeds} for a in arms}), arms,
                       cfg.n_bootstrap, np.random.default_rng([cfg.seed, 0]))

    # Equal target accuracy: each seed's checkpoint (with circuits, step > 0) nearest each level.
    cand = {a: {s: {st: inp.curves[a][s][st] for st in steps[a][s] if st > 0} for s in seeds} for a in arms}
    if any(not cand[a][s] for a in arms for s in seeds):
        raise DcvError(f"{ctx.path(CIRCUITS)}: every arm and seed needs circuits of a checkpoint after step 0")
    mean_curves = {a: {st: float(np.mean([cand[a][s][st] for s in seeds]))
                       for st in set.intersection(*(set(cand[a][s]) for s in seeds))} for a in arms}
    levels = cfg.accuracy_levels or accuracy_levels(inp.base_accuracy, mean_curves)
    by_level = []
    for i, level in enumerate(levels):
        chosen = {a: {s: nearest_checkpoint(cand[a][s], level) for s in seeds} for a in arms}
        cmp = compare(inp.bases, c0s, _runs(inp, chosen), arms, cfg.n_bootstrap,
                      np.random.default_rng([cfg.seed, 1, i]))
        by_level.append((level, chosen, cmp))

    head_level, head_chosen, head_cmp = by_level[-1]
    caps_out = {}
    for c, s in eq_steps.summary["capabilities"].items():
        ea = {k: v for k, v in head_cmp.summary["capabilities"][c].items() if k != "heads"}
        caps_out[c] = {**s, "equal_accuracy": {"level": head_level, **ea}, "method": inp.bases[c].method,
                       "n_pairs": inp.bases[c].n_pairs,
                       "base_circuit": {"k": c0s[c].k, "heads": [f"L{l}H{h}" for l, h in c0s[c].heads],
                                        "faithfulness": c0s[c].faithfulness, "reached": c0s[c].reached}}
    metrics = {
        "arms": list(arms), "seeds": seeds, "faithfulness_target": cfg.faithfulness_target,
        "n_bootstrap": cfg.n_bootstrap,
        "equal_steps": {"step": final, "common_steps": common},
        "equal_accuracy": {
            "headline_level": head_level,
            "levels": [{"level": lv, "checkpoints": {a: {str(s): st for s, st in ch[a].items()} for a in arms},
                        "target_accuracy": {a: float(np.mean([inp.curves[a][s][ch[a][s]] for s in seeds])) for a in arms},
                        "dcv": {**{c: v["dcv"] for c, v in cmp.summary["capabilities"].items()}, "mean": cmp.summary["mean"]["dcv"]},
                        "ci95": {**{c: v["ci95"] for c, v in cmp.summary["capabilities"].items()}, "mean": cmp.summary["mean"]["ci95"]}}
                       for lv, ch, cmp in by_level]},
        "capabilities": caps_out,
        "mean": {**eq_steps.summary["mean"], "equal_accuracy": {"level": head_level, **head_cmp.summary["mean"]}},
        "sanity": sanity(inp, c0s, arms, _runs(inp, {a: {s: final for s in seeds} for a in arms}),
                         cfg.n_bootstrap, cfg.seed),
    }

    with io.atomic_dir(ctx.path(OUT_PLOTS)) as d:
        for c, mp in eq_steps.maps.items():
            io.write_json(d / "heads" / f"{c}.json", io.json_safe({
                "capability": c, "step": final, "arms": list(arms), "base_circuit": mp["base_circuit"],
                "base_effects": _head_map(mp["base_effects"]), "v": {a: _head_map(mp["v"][a]) for a in arms},
                "dcv": _head_map(mp["dcv"]),
                "cross_model": {a: _head_map(mp["cross_model"][a]) if mp["cross_model"][a] is not None else None
                                for a in arms}}))
        io.write_csv(d / "checkpoints.csv", list(rows[0]), rows)
        by_step = []
        for st in common:
            cv = {a: float(np.mean([r["cv"] for r in rows if r["arm"] == a and r["step"] == st])) for a in arms}
            by_step.append({"step": st, "dcv": cv[arms[0]] - cv[arms[1]], **{f"cv_{a}": cv[a] for a in arms}})
        io.write_csv(d / "by-step.csv", list(by_step[0]), by_step)
        dcv_rows = []
        for name, summ in (("equal-steps", eq_steps.summary), ("equal-accuracy", head_cmp.summary)):
            for c, v in [*summ["capabilities"].items(), ("mean", summ["mean"])]:
                dcv_rows.append({"comparison": name, "capability": c, "dcv": v["dcv"], "low": v["ci95"]["low"],
                                 "high": v["ci95"]["high"]})
        io.write_csv(d / "dcv.csv", list(dcv_rows[0]), dcv_rows)
    return ctx.finish(metrics, t0, OUT_METRICS, [(OUT_PLOTS, "plots")])


def main(params: str) -> None:
    """Bad params, then bad inputs, stop the stage before anything is written (not even the MLflow run)."""
    from stages.params import load_params

    p = load_params(params)
    inputs = load_inputs(Path(params).resolve().parent, list(p.common.seeds))
    with stage("score-dcv", params, SECTIONS) as ctx:
        run(ctx, inputs)
