"""Stage `score-dcv`: circuit vulnerability of every fine-tuned model, and DCV(a, b) = CV^a - CV^b with 95% CIs for
every pair of arms in `dcv.pairs` (the first pair, sft vs rl, is the headline).

    dcv stage score-dcv [--params params.yaml]

Reads `circuits/` (stage extract-circuits: `base/<cap>.json`, `<arm>/seed-<s>/step-<n>/<cap>.json`) and the target
accuracy of every checkpoint from the measurement table (`measurements/models.csv`, stage evaluate-forgetting).
Two comparisons per pair:

- equal steps: the last step that both arms have circuits for in every seed (the final step under matched
  budgets);
- equal target accuracy: for each level of `dcv.accuracy_levels` (null: three levels from the base's accuracy up to
  the highest one both arms reach), each seed's checkpoint nearest the level; the highest level is the headline.

Writes `metrics/score-dcv.json` (`comparisons.<a>-<b>`; the headline pair's also at the top level:
`capabilities.<cap>.dcv`, `.ci95`, `.cv.<arm>`, ..., `mean`; `sanity`: DCV of the base against itself, CV of a
circuit with its heads zeroed, the CI with shuffled arm labels), `measurements/circuits.csv` (every measure of every
checkpoint, `dcv.scoring.scores.CircuitScore`) and `plots/dcv/`: `heads/<a>-<b>/<cap>.json` (head maps at equal
steps), `by-step.csv` (CV per arm at every common step, means over capabilities and seeds) and `dcv.csv`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, stage, stage_params

PARAMS = ["dcv", "common.arms", "common.seeds"]


@dataclass
class Inputs:
    bases: dict  # capability -> Circuit of the base
    circuits: dict  # (arm, seed, step) -> capability -> Circuit
    curves: dict  # arm -> seed -> step -> target accuracy (step 0 = the base)
    base_accuracy: float


def pair_name(pair) -> str:
    return f"{pair[0]}-{pair[1]}"


def load_inputs(layout, arms: list[str], seeds: list[int]) -> Inputs:
    """Every circuits file and the measured target accuracies, checked before the MLflow run opens."""
    from dcv.layout import BASE, model_id
    from dcv.measurements import MeasurementTable
    from dcv.scoring.circuits import capabilities, check_compatible, load_circuit

    caps = capabilities(layout.circuits)
    bases = {c: load_circuit(layout.circuit_file(BASE, c)) for c in caps}
    table = MeasurementTable.read(layout.measurements)
    circuits, curves = {}, {}
    for arm in arms:
        curves[arm] = {}
        for s in seeds:
            steps = layout.circuit_steps(arm, s)
            if not steps:
                raise DcvError(f"{layout.circuits / arm / f'seed-{s}'}: no circuits (seed {s} of arm {arm}; "
                               f"run stage extract-circuits)")
            curves[arm][s] = table.target_curve(arm, s)
            for step in steps:
                mid = model_id(arm, s, step)
                d = {c: load_circuit(layout.circuit_file(mid, c)) for c in caps}
                for c in caps:
                    check_compatible(bases[c], d[c])
                if step not in curves[arm][s]:
                    raise DcvError(f"{layout.measurements}: no rows of model {mid}, which has circuits "
                                   f"(rerun stage evaluate-forgetting)")
                circuits[(arm, s, step)] = d
    return Inputs(bases, circuits, curves, table.first(BASE).target_accuracy)


def common_steps(inp: Inputs, arms: list[str], seeds: list[int], where=None) -> list[int]:
    """The checkpoint steps that have circuits for every arm in every seed (the arms compare at the last one)."""
    steps = {a: {s: sorted(st for (aa, ss, st) in inp.circuits if aa == a and ss == s) for s in seeds} for a in arms}
    common = sorted(set.intersection(*(set(steps[a][s]) for a in arms for s in seeds)))
    if not common:
        raise DcvError(f"{where or 'circuits'}: no step has circuits for every arm in every seed "
                       f"({'; '.join(f'{a}: {sorted(set().union(*map(set, steps[a].values())))}' for a in arms)})")
    return common


def _runs(inp: Inputs, chosen: dict[str, dict[int, int]]) -> dict:
    """capability -> arm -> [Circuit of each seed's chosen step]."""
    return {c: {a: [inp.circuits[(a, s, chosen[a][s])][c] for s in sorted(chosen[a])] for a in chosen}
            for c in inp.bases}


def _ablated(circuit, mask):
    """A copy of the base circuit whose C0 heads contribute nothing (their effects zeroed): CV must be 1."""
    return replace(circuit, effects=circuit.effects * ~mask, effects_per_pair=circuit.effects_per_pair * ~mask)


def sanity(inp: Inputs, c0s: dict, pair: tuple[str, str], runs: dict, n_boot: int, seed: int) -> dict:
    import numpy as np

    from dcv.scoring.dcv import compare, shuffled_ci
    from dcv.scoring.measures import score_model

    n = len(next(iter(runs.values()))[pair[0]])
    self_runs = {c: {a: [b] * n for a in pair} for c, b in inp.bases.items()}
    self_cmp = compare(inp.bases, c0s, self_runs, pair, n_boot, np.random.default_rng([seed, 2])).summary["mean"]
    ablated = [score_model(b, c0s[c], _ablated(b, c0s[c].mask(b.shape))) for c, b in inp.bases.items()]
    return {
        "self": {"dcv": self_cmp["dcv"], "ci95": self_cmp["ci95"]},
        "base_cv": float(np.mean([score_model(b, c0s[c], b).cv for c, b in inp.bases.items()])),
        "ablated_cv": float(np.mean([s.cv for s in ablated])),
        "ablated_v_min": float(min(np.nanmin(s.v) for s in ablated)),
        "shuffled_arms": shuffled_ci(inp.bases, c0s, runs, pair, n_boot, np.random.default_rng([seed, 3])),
    }


def _head_map(a) -> list:
    return [[None if v != v else float(v) for v in row] for row in a.tolist()]


def compare_pair(inp: Inputs, c0s: dict, pair: tuple[str, str], seeds: list[int], final: int, cfg, index: int):
    """Equal steps and equal target accuracy for one pair of arms: (summary, equal-steps Comparison)."""
    import numpy as np

    from dcv.scoring.dcv import accuracy_levels, compare, nearest_checkpoint

    eq_steps = compare(inp.bases, c0s, _runs(inp, {a: {s: final for s in seeds} for a in pair}), pair,
                       cfg.n_bootstrap, np.random.default_rng([cfg.seed, index, 0]))
    # Equal target accuracy: each seed's checkpoint (with circuits, step > 0) nearest each level.
    cand = {a: {s: {st: inp.curves[a][s][st] for (aa, ss, st) in inp.circuits if aa == a and ss == s and st > 0}
                for s in seeds} for a in pair}
    if any(not cand[a][s] for a in pair for s in seeds):
        raise DcvError("every arm and seed needs circuits of a checkpoint after step 0")
    mean_curves = {a: {st: float(np.mean([cand[a][s][st] for s in seeds]))
                       for st in set.intersection(*(set(cand[a][s]) for s in seeds))} for a in pair}
    levels = cfg.accuracy_levels or accuracy_levels(inp.base_accuracy, mean_curves)
    by_level = []
    for i, level in enumerate(levels):
        chosen = {a: {s: nearest_checkpoint(cand[a][s], level) for s in seeds} for a in pair}
        cmp = compare(inp.bases, c0s, _runs(inp, chosen), pair, cfg.n_bootstrap,
                      np.random.default_rng([cfg.seed, index, 1, i]))
        by_level.append((level, chosen, cmp))
    head_level, _, head_cmp = by_level[-1]
    caps = {}
    for c, s in eq_steps.summary["capabilities"].items():
        ea = {k: v for k, v in head_cmp.summary["capabilities"][c].items() if k != "heads"}
        caps[c] = {**s, "equal_accuracy": {"level": head_level, **ea}}
    summary = {
        "arms": list(pair),
        "capabilities": caps,
        "mean": {**eq_steps.summary["mean"], "equal_accuracy": {"level": head_level, **head_cmp.summary["mean"]}},
        "equal_accuracy": {
            "headline_level": head_level,
            "levels": [{"level": lv, "checkpoints": {a: {str(s): st for s, st in ch[a].items()} for a in pair},
                        "target_accuracy": {a: float(np.mean([inp.curves[a][s][ch[a][s]] for s in seeds])) for a in pair},
                        "dcv": {**{c: v["dcv"] for c, v in cmp.summary["capabilities"].items()}, "mean": cmp.summary["mean"]["dcv"]},
                        "ci95": {**{c: v["ci95"] for c, v in cmp.summary["capabilities"].items()}, "mean": cmp.summary["mean"]["ci95"]}}
                       for lv, ch, cmp in by_level]},
    }
    return summary, eq_steps, head_cmp


def run(ctx: StageContext, inp: Inputs) -> dict:
    import numpy as np

    from dcv.scoring.measures import base_circuit, score_model
    from dcv.scoring.scores import CircuitScore
    from dcv.tables import write_table

    t0 = time.perf_counter()
    cfg, seeds, arms = ctx.params.dcv, list(ctx.params.common.seeds), list(ctx.params.common.arms)
    c0s = {c: base_circuit(b, cfg.faithfulness_target) for c, b in inp.bases.items()}
    common = common_steps(inp, arms, seeds)
    final = common[-1]

    # Every checkpoint with circuits: each measure, per capability.
    rows = []
    for (a, s, st), d in sorted(inp.circuits.items()):
        for c, x in sorted(d.items()):
            sc = score_model(inp.bases[c], c0s[c], x)
            rows.append(CircuitScore(model=x.model, arm=a, seed=s, step=st, capability=c,
                                     target_accuracy=inp.curves[a][s][st], cv=sc.cv, preserved=sc.preserved,
                                     rank_correlation=sc.rank_correlation,
                                     faithfulness_retained=sc.faithfulness_retained, cross_model_cv=sc.cross_model_cv))

    comparisons, maps = {}, {}
    for i, pair in enumerate(cfg.pairs):
        summary, eq, _ = compare_pair(inp, c0s, tuple(pair), seeds, final, cfg, i)
        comparisons[pair_name(pair)] = summary
        maps[pair_name(pair)] = (tuple(pair), eq.maps)
    head = pair_name(cfg.pairs[0])
    per_cap = {c: {"method": inp.bases[c].method, "n_pairs": inp.bases[c].n_pairs,
                   "base_circuit": {"k": c0s[c].k, "heads": [f"L{l}H{h}" for l, h in c0s[c].heads],
                                    "faithfulness": c0s[c].faithfulness, "reached": c0s[c].reached}}
               for c in sorted(inp.bases)}
    metrics = {
        "arms": arms, "seeds": seeds, "faithfulness_target": cfg.faithfulness_target, "n_bootstrap": cfg.n_bootstrap,
        "pairs": [list(p) for p in cfg.pairs], "headline": head,
        "equal_steps": {"step": final, "common_steps": common},
        "base_circuits": per_cap,
        "comparisons": comparisons,
        "capabilities": {c: {**v, **per_cap[c]} for c, v in comparisons[head]["capabilities"].items()},
        "mean": comparisons[head]["mean"],
        "sanity": sanity(inp, c0s, tuple(cfg.pairs[0]),
                         _runs(inp, {a: {s: final for s in seeds} for a in cfg.pairs[0]}), cfg.n_bootstrap, cfg.seed),
    }

    write_table(ctx.layout.circuit_scores, rows, CircuitScore)
    with io.atomic_dir(ctx.layout.plots("dcv")) as d:
        for name, (pair, mp) in maps.items():
            for c, m in mp.items():
                io.write_json(d / "heads" / name / f"{c}.json", io.json_safe({
                    "capability": c, "step": final, "arms": list(pair), "base_circuit": m["base_circuit"],
                    "base_effects": _head_map(m["base_effects"]), "v": {a: _head_map(m["v"][a]) for a in pair},
                    "dcv": _head_map(m["dcv"]),
                    "cross_model": {a: _head_map(m["cross_model"][a]) if m["cross_model"][a] is not None else None
                                    for a in pair}}))
        by_step = [{"arm": a, "step": st, "cv": float(np.mean([r.cv for r in rows if r.arm == a and r.step == st]))}
                   for a in arms for st in common]
        io.write_csv(d / "by-step.csv", ["arm", "step", "cv"], by_step)
        dcv_rows = []
        for name, summ in comparisons.items():
            for comp, part in (("equal-steps", None), ("equal-accuracy", "equal_accuracy")):
                for c, v in [*summ["capabilities"].items(), ("mean", summ["mean"])]:
                    v = v if part is None else v[part]
                    dcv_rows.append({"pair": name, "comparison": comp, "capability": c, "dcv": v["dcv"],
                                     "low": v["ci95"]["low"], "high": v["ci95"]["high"]})
        io.write_csv(d / "dcv.csv", list(dcv_rows[0]), dcv_rows)
    return ctx.finish(metrics, t0, ctx.layout.metrics("score-dcv"),
                      [(ctx.layout.plots("dcv"), "plots"), (ctx.layout.circuit_scores, None)])


def main(params: str) -> None:
    """Bad params, then bad inputs, stop the stage before anything is written (not even the MLflow run)."""
    from dcv.layout import Layout

    p, root = stage_params(params, "score-dcv", PARAMS)
    inputs = load_inputs(Layout(root), list(p.common.arms), list(p.common.seeds))
    common_steps(inputs, list(p.common.arms), list(p.common.seeds), Layout(root).circuits)
    with stage("score-dcv", params, PARAMS) as ctx:
        run(ctx, inputs)
