"""Stage `score-dcv`: circuit vulnerability of every fine-tuned model, and DCV(a, b) = CV^a - CV^b with 95% intervals
for every pair of arms in `dcv.pairs` (the first pair is the headline); which measure predicts forgetting.

    dcv stage score-dcv [--params params.yaml]

Reads `circuits/` (stage extract-circuits: `discovery/base/<cap>.json`, the base on the discovery split, where the
base circuit C0 is chosen; `base/<cap>.json` and `<arm>/seed-<s>/step-<n>/<cap>.json` on the scoring split, where
every measure is computed) and the measurement table (`measurements/models.csv`, stage evaluate-forgetting: target
accuracy, forgetting on the forgetting split, forward KL, parameter distance). Two comparisons per pair:

- equal steps: the last step that both arms have circuits for in every seed (the final step under matched
  budgets; each pair its own);
- equal target accuracy: for each level of `dcv.accuracy_levels` (null: three levels from the base's accuracy up to
  the highest one every seed of both arms reaches), each seed's measures interpolated linearly in target accuracy
  between the two checkpoints around the level (step 0 = the model the arm started from: the base, or the checkpoint
  of the arm it continues, `<arm>.init`); a level outside some seed's range is not
  reported, and one where some seed's nearest measured checkpoint is further than `dcv.accuracy_tolerance` from it
  is reported with its gap but is not the headline. The headline level is the highest one within the tolerance.

Writes `metrics/score-dcv.json` (`comparisons.<a>-<b>`; the headline pair's also at the top level:
`capabilities.<cap>.dcv`, `.ci95`, `.cv.<arm>`, ..., `mean`; `base_circuits` with the guards' flags; `predictors`:
R² of forgetting against each predictor; `checkpoints`: every checkpoint's model-level figures, read by `dcv sweep`;
`sanity`: checks whose outcome is known), `measurements/circuits.csv` (every measure of every checkpoint,
`dcv.scoring.scores.CircuitScore`) and `plots/dcv/`: `heads/<a>-<b>/<cap>.json` (head maps at equal steps),
`by-step.csv` (CV per arm at every step all its seeds have, means over capabilities and seeds), `dcv.csv` and
`study.csv` (the study's measures per capability, arm and step).

The study's measures (`study`, dcv.scoring.study) read the DBM masks of `circuits/<model>/study/<cap>.json` on the
capabilities extract-circuits fitted them on (`circuits.study_capabilities`, by default the target task's own pairs):
the base's circuit {m > 0.5}; per arm, size, overlap with it, Jaccard and mask shift at every step and the retention
from the first checkpoint to the last; per pair, the same at the equal step and the headline equal-accuracy level
with Welch intervals of the differences and the vulnerable heads (m^a < m^b - `dcv.study_delta`) beside their
swapped-arms baseline. Intervals are over seeds only (one mask per model, not refit per probe-pair draw).

An arm that continues another (`rl_sft` from `sft`) is scored like every arm, against the base's circuits and
forgetting; only its step 0 is the checkpoint it started from (`MeasurementTable.start`), whose circuits are those of
that checkpoint of the other arm.
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
    bases: dict  # capability -> Circuit of the base on the scoring split
    discovery: dict  # capability -> Circuit of the base on the discovery split
    circuits: dict  # (arm, seed, step) -> capability -> Circuit
    curves: dict  # arm -> seed -> step -> target accuracy (step 0 = the model it started from)
    base_accuracy: float
    table: object  # dcv.measurements.MeasurementTable
    starts: dict = None  # (arm, seed) -> (arm, seed, step) of the checkpoint it continues; absent: the base
    study: dict = None  # capability -> {"base" | (arm, seed, step): the study's DBM mask [layer, head]}


def pair_name(pair) -> str:
    return f"{pair[0]}-{pair[1]}"


def load_inputs(layout, arms: list[str], seeds: list[int]) -> Inputs:
    """Every circuits file and the measurement table, checked before the MLflow run opens."""
    from dcv.layout import BASE, model_id, parse_model_id
    from dcv.measurements import MeasurementTable
    from dcv.scoring.circuits import capabilities, check_compatible, check_discovery, load_circuit, load_study_mask
    from dcv.splits import DISCOVERY_MODEL

    table = MeasurementTable.read(layout.measurements)
    # Prior capabilities only: those with forgetting-split rows. A task capability (the target's own pairs,
    # `dcv.splits.TARGET`) has circuits but no forgetting: the study's measures score it, on its DBM masks.
    caps = [c for c in capabilities(layout.circuits) if c in table.capabilities]
    bases = {c: load_circuit(layout.circuit_file(BASE, c)) for c in caps}
    disc = {}
    for c in caps:
        f = layout.circuit_file(DISCOVERY_MODEL, c)
        if not f.is_file():
            raise DcvError(f"{f}: not found (the base on the discovery split, where C0 is chosen; rerun stage "
                           f"extract-circuits)")
        disc[c] = load_circuit(f)
        check_discovery(disc[c], bases[c])
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
    starts = {}
    for arm in arms:
        for s in seeds:
            start = table.start(arm, s)
            if start == BASE:
                continue
            key = parse_model_id(start)
            if key not in circuits:
                raise DcvError(f"{layout.circuits / start}: no circuits of {start}, where {arm} seed {s} started "
                               f"(its step 0; run stage extract-circuits with {key[0]} in common.arms)")
            starts[(arm, s)] = key
    study = {}  # every model with circuits has a mask on each capability the base has one on
    for c in sorted(f.stem for f in (layout.circuits / BASE / "study").glob("*.json")):
        base = load_study_mask(layout.study_mask_file(BASE, c))
        study[c] = {BASE: base, **{k: load_study_mask(layout.study_mask_file(model_id(*k), c), base.shape)
                                   for k in circuits}}
    return Inputs(bases, disc, circuits, curves, table.first(BASE).target_accuracy, table, starts, study)


def common_steps(inp: Inputs, arms: list[str], seeds: list[int], where=None) -> list[int]:
    """The checkpoint steps that have circuits for every arm of `arms` (a pair) in every seed (they compare at the
    last one)."""
    steps = {a: {s: sorted(st for (aa, ss, st) in inp.circuits if aa == a and ss == s) for s in seeds} for a in arms}
    common = sorted(set.intersection(*(set(steps[a][s]) for a in arms for s in seeds)))
    if not common:
        raise DcvError(f"{where or 'circuits'}: no step has circuits for every arm in every seed "
                       f"({'; '.join(f'{a}: {sorted(set().union(*map(set, steps[a].values())))}' for a in arms)})")
    return common


def _model(inp: Inputs, arm: str, seed: int, step: int, cap: str):
    """The Circuit of (arm, seed, step) on a capability; step 0 is the model it started from."""
    if step == 0:
        start = (inp.starts or {}).get((arm, seed))
        return inp.bases[cap] if start is None else inp.circuits[start][cap]
    return inp.circuits[(arm, seed, step)][cap]


def _runs(inp: Inputs, chosen: dict[str, dict[int, list[tuple[int, float]]]]) -> dict:
    """capability -> arm -> [Run of each seed]; chosen: arm -> seed -> [(step, weight)]."""
    from dcv.scoring.dcv import Run

    return {c: {a: [Run(s, tuple((_model(inp, a, s, st, c), w) for st, w in chosen[a][s])) for s in sorted(chosen[a])]
                for a in chosen} for c in inp.bases}


def _mask_of(inp: Inputs, cap: str):
    """mask(arm, seed, step) of the study's DBM masks on a capability; step 0 is the model the arm started from."""
    from dcv.layout import BASE

    masks = inp.study[cap]

    def of(arm: str, seed: int, step: int):
        if step == 0:
            return masks[(inp.starts or {}).get((arm, seed), BASE)]
        return masks[(arm, seed, step)]
    return of


def study_scores(inp: Inputs, cfg, arms: list[str], seeds: list[int], comparisons: dict, common: dict) -> dict:
    """The study's measures (dcv.scoring.study) on its DBM masks, per capability of `circuits.study_capabilities`:
    the base's circuit; per arm its measures at every step and its retention from the first checkpoint to the last;
    per pair of `dcv.pairs` the comparison at the pair's equal step and at its headline equal-accuracy level (the same
    checkpoints and weights as CV there)."""
    import numpy as np

    from dcv.layout import BASE, model_id
    from dcv.scoring import study

    rng = np.random.default_rng([cfg.seed, 13])  # the study's draws, apart from CV's bootstrap stream
    out = {}
    for c, masks in sorted((inp.study or {}).items()):
        base, of = masks[BASE], _mask_of(inp, c)
        per_arm = {}
        for a in arms:
            steps = common_steps(inp, [a], seeds)
            start = sorted({model_id(*inp.starts[(a, s)]) if (a, s) in (inp.starts or {}) else BASE for s in seeds})
            per_arm[a] = {"start": start, "by_step": study.by_step(base, of, a, seeds, [0, *steps]),
                          "retention": study.retention(base, of, a, seeds, steps[0], steps[-1])}
        per_pair = {}
        for pair in cfg.pairs:
            name, pair = pair_name(pair), tuple(pair)
            st = common[name][-1]
            eq = study.compare(base, of, pair, {x: {s: [(st, 1.0)] for s in seeds} for x in pair}, cfg.study_delta,
                               rng, cfg.n_bootstrap)
            ea, acc = comparisons[name]["equal_accuracy"], None
            if ea["headline_level"] is not None:
                (lv,) = [x for x in ea["levels"] if x["level"] == ea["headline_level"]]
                terms = {x: {int(s): [(int(t), float(w)) for t, w in v] for s, v in lv["checkpoints"][x].items()}
                         for x in pair}
                acc = {"level": lv["level"], "gap": lv["gap"],
                       **study.compare(base, of, pair, terms, cfg.study_delta, rng, cfg.n_bootstrap)}
            per_pair[name] = {"equal_steps": {"step": st, **eq}, "equal_accuracy": acc}
        out[c] = {"base": {"size": int(study.circuit(base).sum()), "n_heads": int(base.size)}, "arms": per_arm,
                  "pairs": per_pair}
    return {"method": "dbm", "delta": cfg.study_delta, "capabilities": out}


def _ablated(circuit, mask):
    """A copy of the base circuit whose C0 heads contribute nothing (their effects zeroed): CV must be 1."""
    return replace(circuit, effects=circuit.effects * ~mask, effects_per_pair=circuit.effects_per_pair * ~mask)


def _forgetting(inp: Inputs, arm: str, seed: int, step: int) -> dict:
    from dcv.layout import model_id

    if step == 0:
        start = (inp.starts or {}).get((arm, seed))
        if start is not None:
            return inp.table.forgetting(model_id(*start))
        return {"mean": 0.0, **{c: 0.0 for c in inp.table.capabilities}}
    return inp.table.forgetting(model_id(arm, seed, step))


ALPHA = 0.05


def sanity(inp: Inputs, c0s: dict, pair: tuple[str, str], arms: list[str], seeds: list[int], final: int, cfg,
           finals: dict[str, int]) -> dict:
    """Checks whose outcome is known, each with `expected` and `passed`:

    - `self`: DCV of the base against itself is 0 with an interval [0, 0]; `base_cv` 0; `ablated_cv` (the base
      with its C0 heads zeroed) 1;
    - `zeroed_vs_base`: a label-permutation test (labels swapped within probe pairs) of the base with its C0 heads
      zeroed against the base must reject at 5%;
    - `same_arm_seeds`: two seeds of the headline's first arm, compared as if they were two arms with the headline's
      test (the seed variance pooled over every other run at its arm's last common step, `finals`: every arm's seeds
      but these two), must
      not reject. Beside it, the
      pairs-only permutation test of the same two models: it rejects whenever the seeds differ beyond probe-pair
      noise, which is why seeds are resampled (a diagnostic, not a check)."""
    import numpy as np

    from dcv.scoring.dcv import Run, compare, pair_permutation
    from dcv.scoring.measures import score_model

    g = cfg.guards.min_signal
    rng = np.random.default_rng([cfg.seed, 9])
    n = len(seeds)
    self_runs = {c: {a: [Run.of(s, b) for s in seeds] for a in pair} for c, b in inp.bases.items()}
    self_cmp = compare(inp.bases, c0s, self_runs, pair, cfg.n_bootstrap, np.random.default_rng([cfg.seed, 2]),
                       cfg.n_permutations, g).summary["mean"]
    zeroed = {c: _ablated(b, c0s[c].mask(b.shape)) for c, b in inp.bases.items()}
    ablated = [score_model(b, c0s[c], zeroed[c], g) for c, b in inp.bases.items()]
    perm = pair_permutation(inp.bases, c0s, zeroed, inp.bases, rng, cfg.n_permutations)
    base_cv = float(np.mean([score_model(b, c0s[c], b, g).cv for c, b in inp.bases.items()]))
    out = {
        "self": {"dcv": self_cmp["dcv"], "ci95": self_cmp["ci95"], "expected": "0 with [0, 0]",
                 "passed": bool(self_cmp["dcv"] == 0 and self_cmp["ci95"] == {"low": 0.0, "high": 0.0})},
        "base_cv": base_cv,
        "ablated_cv": float(np.mean([s.cv for s in ablated])),
        "ablated_v_min": float(min(np.nanmin(s.v) if np.isfinite(s.v).any() else np.nan for s in ablated)),
        "zeroed_vs_base": {"test": "label permutation within probe pairs", **perm, "expected": "reject",
                           "passed": bool(perm["p"] < ALPHA)},
    }
    a = pair[0]
    if n < 2:
        out["same_arm_seeds"] = {"skipped": "one seed"}
        return out
    s0, s1 = seeds[0], seeds[1]
    # Per-run CV at the final step of every arm and seed but the two compared: the pooled within-arm variance of
    # one run's CV, independent of the difference it judges.
    others = {x: [s for s in seeds if x != a or s not in (s0, s1)] for x in arms}
    per = {c: {x: [score_model(inp.bases[c], c0s[c], inp.circuits[(x, s, finals[x])][c], g).cv for s in others[x]]
               for x in arms} for c in inp.bases}
    per["mean"] = {x: list(np.mean([per[c][x] for c in inp.bases], axis=0)) if others[x] else [] for x in arms}
    df = float(sum(max(len(v) - 1, 0) for v in per["mean"].values()))
    if df < 1:
        out["same_arm_seeds"] = {"skipped": "no other arm or seed to estimate the seed variance from"}
        return out
    pooled = {k: sum(float(np.var(v, ddof=1)) * (len(v) - 1) for v in per[k].values() if len(v) > 1) / df for k in per}
    names = (f"{a}/seed-{s0}", f"{a}/seed-{s1}")
    runs = {c: {names[0]: [Run.of(s0, inp.circuits[(a, s0, final)][c])],
                names[1]: [Run.of(s1, inp.circuits[(a, s1, final)][c])]} for c in inp.bases}
    seed_var = {k: {x: (pooled[k], df) for x in names} for k in pooled}
    m = compare(inp.bases, c0s, runs, names, cfg.n_bootstrap, np.random.default_rng([cfg.seed, 4]),
                cfg.n_permutations, g, seed_var).summary["mean"]
    rejected = not (m["ci95"]["low"] <= 0.0 <= m["ci95"]["high"])
    pairs_only = pair_permutation(inp.bases, c0s, {c: inp.circuits[(a, s0, final)][c] for c in inp.bases},
                                  {c: inp.circuits[(a, s1, final)][c] for c in inp.bases}, rng, cfg.n_permutations)
    out["same_arm_seeds"] = {"arm": a, "seeds": [s0, s1], "step": final, "dcv": m["dcv"], "ci95": m["ci95"],
                             "se": m["se"], "df": m["df"], "seed_variance_pooled": pooled["mean"], "rejected": rejected,
                             "expected": "not reject", "passed": not rejected,
                             "pairs_only_permutation": {**pairs_only, "rejected": bool(pairs_only["p"] < ALPHA)}}
    return out


def _head_map(a) -> list:
    return [[None if v != v else float(v) for v in row] for row in a.tolist()]


def _without_heads(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "heads"}


def compare_pair(inp: Inputs, c0s: dict, pair: tuple[str, str], seeds: list[int], final: int, cfg, index: int):
    """Equal steps and equal target accuracy for one pair of arms: (summary, equal-steps Comparison)."""
    import numpy as np

    from dcv.scoring.dcv import accuracy_levels, bracket, compare
    from dcv.stats import mean

    g = cfg.guards.min_signal
    eq_steps = compare(inp.bases, c0s, _runs(inp, {a: {s: [(final, 1.0)] for s in seeds} for a in pair}), pair,
                       cfg.n_bootstrap, np.random.default_rng([cfg.seed, index, 0]), cfg.n_permutations, g)
    # Equal target accuracy: each seed's accuracy curve over the steps with circuits, from its start (step 0: the
    # base, or the checkpoint it continues).
    cand = {a: {s: {0: inp.curves[a][s][0], **{st: inp.curves[a][s][st] for (aa, ss, st) in inp.circuits
                                              if aa == a and ss == s and st > 0}} for s in seeds} for a in pair}
    if any(len(cand[a][s]) < 2 for a in pair for s in seeds):
        raise DcvError("every arm and seed needs circuits of a checkpoint after step 0")
    levels = cfg.accuracy_levels if cfg.accuracy_levels is not None else accuracy_levels(inp.base_accuracy, cand)
    by_level, skipped = [], []
    for i, level in enumerate(levels):
        br = {a: {s: bracket(cand[a][s], level) for s in seeds} for a in pair}
        out = [(a, s) for a in pair for s in seeds if br[a][s] is None]
        if out:
            skipped.append({"level": level, "reason": "outside the target-accuracy range of "
                            + ", ".join(f"{a} seed {s}" for a, s in out)})
            continue
        chosen = {a: {s: br[a][s]["terms"] for s in seeds} for a in pair}
        cmp = compare(inp.bases, c0s, _runs(inp, chosen), pair, cfg.n_bootstrap,
                      np.random.default_rng([cfg.seed, index, 1, i]), cfg.n_permutations, g)
        worst = max(((a, s) for a in pair for s in seeds), key=lambda x: br[x[0]][x[1]]["gap"])
        gap = br[worst[0]][worst[1]]["gap"]
        def interp(a, s, f, chosen=chosen):
            """A seed's value of f(arm, seed, step) at the level: its checkpoints' values, interpolated."""
            return sum(w * f(a, s, st) for st, w in chosen[a][s])

        caps = sorted(inp.bases)
        forget = {a: {"mean": mean(interp(a, s, lambda a_, s_, st: _forgetting(inp, a_, s_, st)["mean"]) for s in seeds),
                      **{c: mean(interp(a, s, lambda a_, s_, st, c=c: _forgetting(inp, a_, s_, st)[c]) for s in seeds)
                         for c in inp.table.capabilities}} for a in pair}
        by_level.append({
            "level": level, "within_tolerance": bool(gap <= cfg.accuracy_tolerance), "gap": gap,
            "largest_gap": {"arm": worst[0], "seed": worst[1], "steps": br[worst[0]][worst[1]]["steps"],
                            "accuracies": br[worst[0]][worst[1]]["accuracies"]},
            "checkpoints": {a: {str(s): [[st, w] for st, w in chosen[a][s]] for s in seeds} for a in pair},
            "gaps": {a: {str(s): br[a][s]["gap"] for s in seeds} for a in pair},
            "target_accuracy": {a: mean(interp(a, s, lambda a_, s_, st: cand[a_][s_][st]) for s in seeds) for a in pair},
            "forgetting": forget,
            "dcv": {**{c: cmp.summary["capabilities"][c]["dcv"] for c in caps}, "mean": cmp.summary["mean"]["dcv"]},
            "ci95": {**{c: cmp.summary["capabilities"][c]["ci95"] for c in caps}, "mean": cmp.summary["mean"]["ci95"]},
            "_cmp": cmp})
    ok = [lv for lv in by_level if lv["within_tolerance"]]
    head = ok[-1] if ok else None
    caps = {}
    for c, s in eq_steps.summary["capabilities"].items():
        ea = None if head is None else {"level": head["level"], "gap": head["gap"],
                                        **_without_heads(head["_cmp"].summary["capabilities"][c])}
        caps[c] = {**s, "equal_accuracy": ea}
    mean_ea = None if head is None else {"level": head["level"], "gap": head["gap"], "forgetting": head["forgetting"],
                                         **head["_cmp"].summary["mean"]}
    summary = {
        "arms": list(pair),
        "capabilities": caps,
        "mean": {**eq_steps.summary["mean"], "equal_accuracy": mean_ea},
        "equal_accuracy": {"headline_level": None if head is None else head["level"],
                           "tolerance": cfg.accuracy_tolerance,
                           "levels": [{k: v for k, v in lv.items() if k != "_cmp"} for lv in by_level],
                           "skipped": skipped},
    }
    return summary, eq_steps


def predictor_points(inp: Inputs, rows: list) -> list[dict]:
    """One point per checkpoint and capability: forgetting (forgetting split), CV and the logit-difference drop
    (scoring split), forward KL and parameter distance (model-level), target and prior accuracy."""
    t = inp.table
    out = []
    for r in rows:
        first = t.first(r.model)
        out.append({"model": r.model, "arm": r.arm, "seed": r.seed, "step": r.step, "capability": r.capability,
                    "forgetting": t.forgetting(r.model)[r.capability], "cv": r.cv,
                    "logit_diff_drop": r.logit_diff_drop, "forward_kl": first.forward_kl,
                    "param_distance": first.param_distance, "target_accuracy": first.target_accuracy,
                    "prior_accuracy": t.prior_accuracy(r.model)})
    return out


def base_circuit_entry(inp: Inputs, c0, c: str) -> dict:
    b = inp.bases[c]
    return {"method": b.method, "n_pairs": b.n_pairs, "n_pairs_discovery": inp.discovery[c].n_pairs,
            "base_circuit": {"k": c0.k, "heads": [f"L{l}H{h}" for l, h in c0.heads],
                             "faithfulness": c0.faithfulness, "faithfulness_scoring": c0.faithfulness_scoring,
                             "reached": c0.reached, "selection_split": c0.selection_split, "n_heads": c0.n_heads,
                             "preserved_chance": c0.chance_preserved, "preserved_levels": c0.k + 1,
                             "majority": c0.majority,
                             "unstable": {f"L{l}H{h}": why for (l, h), why in sorted(c0.unstable.items())}}}


def run(ctx: StageContext, inp: Inputs) -> dict:
    import numpy as np

    from dcv.scoring.measures import base_circuit, score_model
    from dcv.scoring.predictors import analyse, model_points
    from dcv.scoring.scores import CircuitScore
    from dcv.scoring.study import MEASURES as STUDY_MEASURES
    from dcv.splits import FORGETTING
    from dcv.tables import write_table

    t0 = time.perf_counter()
    cfg, seeds, arms = ctx.params.dcv, list(ctx.params.common.seeds), list(ctx.params.common.arms)
    gd = cfg.guards
    c0s = {c: base_circuit(inp.discovery[c], cfg.faithfulness_target, b, gd.min_relative, gd.se_multiple)
           for c, b in inp.bases.items()}
    common = {pair_name(p): common_steps(inp, list(p), seeds) for p in cfg.pairs}
    final = common[pair_name(cfg.pairs[0])][-1]  # the headline pair's equal step
    finals = {a: common_steps(inp, [a], seeds)[-1] for a in arms}  # each arm's last step that every seed has

    # Every checkpoint with circuits: each measure, per capability.
    rows = []
    for (a, s, st), d in sorted(inp.circuits.items()):
        for c, x in sorted(d.items()):
            sc = score_model(inp.bases[c], c0s[c], x, gd.min_signal)
            rows.append(CircuitScore(model=x.model, arm=a, seed=s, step=st, capability=c,
                                     target_accuracy=inp.curves[a][s][st], cv=sc.cv, preserved=sc.preserved,
                                     rank_correlation=sc.rank_correlation,
                                     faithfulness_retained=sc.faithfulness_retained, cross_model_cv=sc.cross_model_cv,
                                     logit_diff_drop=sc.logit_diff_drop))

    comparisons, maps = {}, {}
    for i, pair in enumerate(cfg.pairs):
        summary, eq = compare_pair(inp, c0s, tuple(pair), seeds, common[pair_name(pair)][-1], cfg, i)
        comparisons[pair_name(pair)] = summary
        maps[pair_name(pair)] = (tuple(pair), eq.maps)
    head = pair_name(cfg.pairs[0])
    per_cap = {c: base_circuit_entry(inp, c0s[c], c) for c in sorted(inp.bases)}
    cap_points = predictor_points(inp, rows)
    points = {"model": model_points(cap_points), "capability": cap_points}
    metrics = {
        "arms": arms, "seeds": seeds, "faithfulness_target": cfg.faithfulness_target, "n_bootstrap": cfg.n_bootstrap,
        "pairs": [list(p) for p in cfg.pairs], "headline": head,
        "splits": {"selection": sorted({c.selection_split or "unknown" for c in c0s.values()}),
                   "scoring": sorted({b.split or "unknown" for b in inp.bases.values()}), "forgetting": FORGETTING},
        "equal_steps": {"step": final, "common_steps": common[pair_name(cfg.pairs[0])],
                        "by_pair": {k: {"step": v[-1], "common_steps": v} for k, v in common.items()}},
        "base_circuits": per_cap,
        "comparisons": comparisons,
        "capabilities": {c: {**v, **per_cap[c]} for c, v in comparisons[head]["capabilities"].items()},
        "mean": comparisons[head]["mean"],
        "predictors": analyse(points, arms, cfg.n_bootstrap, np.random.default_rng([cfg.seed, 7])),
        "checkpoints": points["model"],
        "sanity": sanity(inp, c0s, tuple(cfg.pairs[0]), arms, seeds, final, cfg, finals),
        "study": study_scores(inp, cfg, arms, seeds, comparisons, common),
    }

    write_table(ctx.layout.circuit_scores, rows, CircuitScore)
    with io.atomic_dir(ctx.layout.plots("dcv")) as d:
        for name, (pair, mp) in maps.items():
            for c, m in mp.items():
                io.write_json(d / "heads" / name / f"{c}.json", io.json_safe({
                    "capability": c, "step": common[name][-1], "arms": list(pair), "base_circuit": m["base_circuit"],
                    "unstable": m["unstable"],
                    "base_effects": _head_map(m["base_effects"]), "v": {a: _head_map(m["v"][a]) for a in pair},
                    "dcv": _head_map(m["dcv"]),
                    "cross_model": {a: _head_map(m["cross_model"][a]) if m["cross_model"][a] is not None else None
                                    for a in pair}}))
        by_step = [{"arm": a, "step": st, "cv": float(np.mean([r.cv for r in rows if r.arm == a and r.step == st]))}
                   for a in arms for st in common_steps(inp, [a], seeds)]
        io.write_csv(d / "by-step.csv", ["arm", "step", "cv"], by_step)
        dcv_rows = []
        for name, summ in comparisons.items():
            for comp, part in (("equal-steps", None), ("equal-accuracy", "equal_accuracy")):
                for c, v in [*summ["capabilities"].items(), ("mean", summ["mean"])]:
                    v = v if part is None else v[part]
                    if v is None:
                        continue
                    dcv_rows.append({"pair": name, "comparison": comp, "capability": c, "dcv": v["dcv"],
                                     "low": v["ci95"]["low"], "high": v["ci95"]["high"],
                                     "gap": v.get("gap", 0.0)})
        io.write_csv(d / "dcv.csv", list(dcv_rows[0]), dcv_rows)
        study_rows = [{"capability": c, "arm": a, "step": row["step"], "measure": k, "mean": row[k]["mean"],
                       "low": row[k]["low"], "high": row[k]["high"], "n": row[k]["n"]}
                      for c, v in metrics["study"]["capabilities"].items() for a, x in v["arms"].items()
                      for row in x["by_step"] for k in STUDY_MEASURES]
        io.write_csv(d / "study.csv", ["capability", "arm", "step", "measure", "mean", "low", "high", "n"], study_rows)
    return ctx.finish(metrics, t0, ctx.layout.metrics("score-dcv"),
                      [(ctx.layout.plots("dcv"), "plots"), (ctx.layout.circuit_scores, None)])


def main(params: str) -> None:
    """Bad params, then bad inputs, stop the stage before anything is written (not even the MLflow run)."""
    from dcv.layout import Layout

    p, root = stage_params(params, "score-dcv", PARAMS)
    inputs = load_inputs(Layout(root), list(p.common.arms), list(p.common.seeds))
    for pair in p.dcv.pairs:
        common_steps(inputs, list(pair), list(p.common.seeds), Layout(root).circuits)
    with stage("score-dcv", params, PARAMS) as ctx:
        run(ctx, inputs)
