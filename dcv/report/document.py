"""reports/report.md: the setup, the figures with one-line captions, the tables and a verdict, all computed from
the metrics, the measurement table and the circuit scores of the earlier stages (no number is typed in). Every arm
of the run and every scored pair of arms appears; the first pair is the headline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dcv.measurements import MeasurementTable
from dcv.report import figures, study
from dcv.report.markdown import figure as _figure
from dcv.report.markdown import table as _table
from dcv.report.stats import (
    adaptation_verdict,
    ci_side,
    ci_text,
    dcv_verdict,
    fmt,
    forgetting_verdict,
    predictor_verdict,
    r_squared,
)
from dcv.scoring.scores import CircuitScore


@dataclass
class ReportData:
    setup: dict  # base, target data, seeds (from params)
    base: dict  # metrics/base.json
    arms: dict[str, dict]  # metrics/<arm>.json (training: budget, description, seconds)
    forgetting: dict  # metrics/evaluate-forgetting.json
    score: dict  # metrics/score-dcv.json
    heads: dict[str, dict[str, dict]]  # pair name -> capability -> plots/dcv/heads/<pair>/<cap>.json
    table: MeasurementTable  # measurements/models.csv
    circuit_scores: list[CircuitScore]  # measurements/circuits.csv
    prepared: dict = field(default_factory=dict)  # metrics/prepare-data.json (split sizes, clean-prompt overlap)


def checkpoint_points(d: ReportData) -> list[dict]:
    """Every checkpoint with circuits (score-dcv's `checkpoints`): arm, seed, step, forgetting, and every predictor
    (means over capabilities)."""
    return sorted(d.score["checkpoints"], key=lambda p: (p["arm"], p["seed"], p["step"]))


def paired_points(points: list[dict], a: str, b: str) -> list[dict]:
    """(seed, step) present in both arms: DCV = CV^a - CV^b, and the differences in forgetting and forward KL."""
    by = {(p["arm"], p["seed"], p["step"]): p for p in points}
    out = []
    for (arm, s, st), p in sorted(by.items()):
        q = by.get((b, s, st))
        if arm == a and q is not None:
            out.append({"seed": s, "step": st, "dcv": p["cv"] - q["cv"], "d_forgetting": p["forgetting"] - q["forgetting"],
                        "d_forward_kl": p["forward_kl"] - q["forward_kl"]})
    return out


def pair_step(sc: dict, name: str) -> int:
    """The equal step of one pair of arms (each pair its own: an arm that continues another has fewer steps)."""
    return sc["equal_steps"].get("by_pair", {}).get(name, {}).get("step", sc["equal_steps"]["step"])


def _starts(arms_f: dict, arm: str) -> list[str]:
    """The models the seeds of an arm started from (`["base"]` for an arm trained from the base)."""
    from dcv.layout import BASE

    return sorted({v.get("start", BASE) for v in arms_f[arm]["seeds"].values()})


def step_gap(arms_f: dict, pair) -> str:
    """'' when both arms of a pair start from the base, else the unmatched training before step 0 that an equal-steps
    comparison leaves (an arm continued from another's checkpoint step n has trained n steps more at each step)."""
    from dcv.layout import BASE, parse_model_id

    out = []
    for x in pair:
        starts = _starts(arms_f, x)
        if starts != [BASE]:
            first = parse_model_id(starts[0])
            out.append(f"{x.upper()} counts its steps from {first[0]}'s step {first[2]} (its start), so at equal steps it "
                       f"has trained {first[2]} steps more in all")
    return "" if not out else " Not matched: " + "; ".join(out) + " (the equal-accuracy comparison has no such gap)."


def starts_text(arms_f: dict, arms: list[str]) -> str:
    """'' when every arm starts from the base, else which arm starts where (its step 0)."""
    from dcv.layout import BASE

    out = [f"{x.upper()} from {', '.join(_starts(arms_f, x))}" for x in arms if _starts(arms_f, x) != [BASE]]
    return "" if not out else " (for an arm that continues another, its step 0 is where it starts: " + "; ".join(out) + ")"


def _steps(budget: dict) -> str:
    return ", ".join(str(x) for x in budget["checkpoint_steps"])


def _setup(d: ReportData, arms: list[str]) -> str:
    s, sc, fg = d.setup, d.score, d.forgetting
    base = s["base"]
    if base["kind"] == "toy":
        m = base["model"]
        n = d.base.get("n_params")
        model = (f"toy-world Qwen2 pretrained here: {m['num_hidden_layers']} layers, {m['num_attention_heads']} heads, "
                 f"hidden {m['hidden_size']}, {f'{n:,}' if isinstance(n, int) else 'n/a'} parameters")
    else:
        model = f"Hugging Face `{base['hf']['model']}` (revision {base['hf'].get('revision') or 'default'})"
    caps = fg["base"]["capabilities"]
    rows = [["base model", model],
            ["prior capabilities", ", ".join(f"{c} ({fmt(v['accuracy'], 2)})" for c, v in sorted(caps.items()))
             + " — base top-1 accuracy on the held-out probes"],
            ["target task", f"{s['target']['source']}: {s['target']['n_train']} train / {s['target']['n_eval']} eval "
                            f"rows; base accuracy {fmt(fg['base']['target_accuracy'], 2)}"],
            ["seeds", ", ".join(str(x) for x in s["seeds"])]]
    for arm in arms:
        m = d.arms[arm]
        cfg, bud = m["config"], m["budget"]
        wall = [v["wall_s"] for v in m["seeds"].values()]
        rows.append([f"arm `{arm}`", f"{m['description']}; {cfg['finetune']} fine-tuning, lr {cfg['learning_rate']:g}; "
                                     f"{bud['max_steps']} steps × {bud['prompts_per_step']} prompts, checkpoints at "
                                     f"{_steps(bud)}; {fmt(float(np.mean(wall)), 0)} s per seed"])
    rows.append(["circuits", f"head effects by `{'/'.join(sorted({v['method'] for v in sc['base_circuits'].values()}))}` "
                             f"patching; C0 = the smallest top-k of the base's ranking on the discovery split with "
                             f"faithfulness ≥ {sc['faithfulness_target']} there (table below)"])
    rows.append(["probe splits", _splits_text(d)])
    one = (" With one seed per arm the seed variance is not estimable: the intervals are the pairs-only ones."
           if len(sc["seeds"]) == 1 else "")
    rows.append(["statistics", f"95% intervals: DCV ± t·√(V_seed + V_pair), V_seed from the per-seed CVs (Welch–"
                               f"Satterthwaite df), V_pair from {sc['n_bootstrap']} draws of one probe-pair weight vector "
                               f"per capability shared by the base and every arm and seed (pairs and seeds are crossed); "
                               f"beside it the crossed bootstrap's percentile interval, Welch's t over seeds alone and the "
                               f"exact permutation p over seeds. C0 is chosen on the discovery split and held fixed. "
                               f"Equal steps = step {sc['equal_steps']['step']}"
                               + "".join(f" ({k}: step {v['step']})" for k, v in sc["equal_steps"].get("by_pair", {}).items()
                                         if v["step"] != sc["equal_steps"]["step"])
                               + f"; equal target accuracy: each seed's "
                               f"measures interpolated in target accuracy between the checkpoints around the level "
                               f"(tolerance on the gap to a measured checkpoint: "
                               f"{fmt(sc['comparisons'][sc['headline']]['equal_accuracy']['tolerance'], 2)}).{one}"])
    return _table(["", ""], rows)


def _splits_text(d: ReportData) -> str:
    """Sizes of the probe splits and where they share clean prompts (a capability with few distinct prompts)."""
    pairs = d.prepared.get("pairs", {})
    sizes = ", ".join(f"{name} {'/'.join(sorted({str(v) for v in pairs[key].values()}))}"
                      for key, name in (("discovery", "discovery"), ("probes", "scoring"), ("forgetting", "forgetting"))
                      if key in pairs)
    text = (f"disjoint pairs per capability: {sizes or 'n/a'}; C0 is chosen on the discovery split, every circuit "
            f"measure is computed on the scoring split, forgetting on the forgetting split")
    shown = lambda k: k.replace("probes", "scoring")  # noqa: E731  (the scoring split's directory is `probes`)
    shared = [f"{c} ({', '.join(f'{shown(k)} {fmt(v * 100, 0)}%' for k, v in sorted(o.items()) if v > 0)})"
              for c, o in sorted(d.prepared.get("clean_overlap", {}).items()) if any(v > 0 for v in o.values())]
    if shared:
        text += ("; pairs are disjoint but some clean prompts recur across splits (share of the second split's "
                 "distinct clean prompts found in the first): " + "; ".join(shared))
    return text


def _c0_table(sc: dict) -> str:
    rows = []
    for c, v in sorted(sc["base_circuits"].items()):
        bc = v["base_circuit"]
        flags = []
        if not bc["reached"]:
            flags.append("target not reached")
        if bc.get("majority"):
            flags.append(f"C0 holds more than half the heads: P is near its chance level")
        if bc["k"] <= 2:
            flags.append(f"P takes only {bc['k'] + 1} values")
        if bc.get("unstable"):
            flags.append("unstable (no v_h): " + ", ".join(f"{h} ({'/'.join(w)})" for h, w in bc["unstable"].items()))
        rows.append([c, f"{bc['k']} of {bc.get('n_heads', 'n/a')}", fmt(bc["faithfulness"], 2),
                     fmt(bc.get("faithfulness_scoring"), 2), fmt(bc.get("preserved_chance"), 2),
                     "; ".join(flags) or "—"])
    return _table(["capability", "C0 heads", "F (discovery)", "F (scoring, held out)", "P by chance", "flags"], rows)


def _cmp_table(sc: dict, cmp: dict, pair: list[str]) -> str:
    a, b = pair
    A, B = a.upper(), b.upper()
    caps = sorted(cmp["capabilities"])
    keys = ("preserved", "rank_correlation", "faithfulness_retained", "cross_model_cv", "logit_diff_drop")

    def row(name, v):
        return ([name] + [fmt(v["cv"][x]) for x in (a, b)] + [ci_text(v["dcv"], v["ci95"])]
                + [fmt(v[k][x]) for k in keys for x in (a, b)])

    return _table(["capability", f"CV {A}", f"CV {B}", "DCV [95% CI]", f"P {A}", f"P {B}", f"rank corr. {A}",
                   f"rank corr. {B}", f"F retained {A}", f"F retained {B}", f"cross-model {A}", f"cross-model {B}",
                   f"LD drop {A}", f"LD drop {B}"],
                  [row(c, cmp["capabilities"][c]) for c in caps] + [row("**mean**", cmp["mean"])])


def _p_text(perm: dict) -> str:
    return f"{fmt(perm.get('p'), 3)} (min {fmt(perm.get('min_p'), 3)})"


def _interval_table(cmp: dict, pair: list[str]) -> str:
    a, b = pair
    caps = sorted(cmp["capabilities"])

    def row(name, v):
        seeds = ", ".join(f"{fmt(x, 2)}" for _, x in sorted(v["dcv_by_seed"].items()))
        return [name, ci_text(v["dcv"], v["ci95"]), f"[{fmt(v['ci95_bootstrap']['low'])}, {fmt(v['ci95_bootstrap']['high'])}]",
                f"[{fmt(v['ci95_seeds']['low'])}, {fmt(v['ci95_seeds']['high'])}]", _p_text(v["permutation"]),
                seeds or "—"]

    return _table(["capability", "DCV [t: seeds + pairs]", "crossed bootstrap", "Welch t, seeds only",
                   "permutation p over seeds", f"DCV per seed"],
                  [row(c, cmp["capabilities"][c]) for c in caps] + [row("**mean**", cmp["mean"])])


def _levels_table(cmp: dict, pair: list[str]) -> str:
    a, b = pair
    ea = cmp["equal_accuracy"]

    def steps(lv, x):
        return "; ".join(f"s{s}: " + "+".join(f"{st}×{fmt(w, 2)}" for st, w in terms)
                         for s, terms in sorted(lv["checkpoints"][x].items()))

    rows = [[fmt(lv["level"]), fmt(lv["gap"]) + ("" if lv["within_tolerance"] else " (beyond tolerance)"),
             steps(lv, a), steps(lv, b), ci_text(lv["dcv"]["mean"], lv["ci95"]["mean"]),
             fmt(lv["forgetting"][a]["mean"]), fmt(lv["forgetting"][b]["mean"])] for lv in ea["levels"]]
    rows += [[fmt(sk["level"]), "not reported: " + sk["reason"], "", "", "", "", ""] for sk in ea["skipped"]]
    return _table(["target accuracy level", "gap", f"{a.upper()} checkpoints (step×weight)",
                   f"{b.upper()} checkpoints (step×weight)", "DCV [95% CI], mean over capabilities",
                   f"forgetting {a.upper()}", f"forgetting {b.upper()}"], rows)


def equal_accuracy_verdict(cmp: dict, caps: list[str], a: str, b: str) -> str:
    """DCV at the headline equal-accuracy level with its gap, or why there is none."""
    ea = cmp["equal_accuracy"]
    m = cmp["mean"]["equal_accuracy"]
    if m is None:
        if not ea["levels"]:
            return ("DCV at equal target accuracy is not reported: no level lies within every seed's range of "
                    "target accuracy.")
        worst = max(ea["levels"], key=lambda lv: lv["gap"])["largest_gap"]
        (s1, s2), (a1, a2) = worst["steps"], worst["accuracies"]
        return (f"DCV at equal target accuracy is not reported as a headline: at no level is every seed of "
                f"{a.upper()} and {b.upper()} within {fmt(ea['tolerance'], 2)} of a measured checkpoint (e.g. "
                f"{worst['arm'].upper()} seed {worst['seed']} goes from {fmt(a1, 2)} at step {s1} to {fmt(a2, 2)} at "
                f"step {s2}: checkpoints between those steps are needed). The levels are listed below with their gaps.")
    above = sum(ci_side(cmp["capabilities"][c]["equal_accuracy"]["ci95"]) == "above" for c in caps)
    return dcv_verdict(f"at equal target accuracy ({fmt(m['level'])}, gap ≤ {fmt(m['gap'], 3)})", m["dcv"], m["ci95"],
                       above, len(caps), a, b)


def protection_verdict(arms_f: dict, comparisons: dict, fraction: float) -> str | None:
    """Does circuit protection buy SFT's speed with RL's retention? Computed when the run has sft, rl and protect."""
    if not {"sft", "rl", "protect"} <= set(arms_f):
        return None
    p, s, r = (arms_f[x] for x in ("protect", "sft", "rl"))
    steps = lambda x: x["adaptation_steps"]  # noqa: E731
    fast = None if steps(p) is None or steps(s) is None else steps(p) <= steps(s)
    keeps = p["forgetting"] <= r["forgetting"]
    how = {True: "as fast as", False: "slower than", None: "(speed undefined: an arm gained nothing) compared with"}
    speed = (f"it adapts {how[fast]} SFT ({fraction * 100:.0f}% of its gain by step "
             f"{fmt(steps(p), 0)}, SFT by {fmt(steps(s), 0)}, RL by {fmt(steps(r), 0)})")
    keep = (f"it forgets {'no more' if keeps else 'more'} than RL ({fmt(p['forgetting'])} ± {fmt(p['forgetting_sd'])} "
            f"against RL's {fmt(r['forgetting'])} ± {fmt(r['forgetting_sd'])} and SFT's {fmt(s['forgetting'])} ± "
            f"{fmt(s['forgetting_sd'])}, mean ± SD over seeds)")
    circ = []
    for name, other in (("sft-protect", "SFT"), ("rl-protect", "RL")):
        if name in comparisons:
            m = comparisons[name]["mean"]
            side = ci_side(m["ci95"])
            word = {"above": f"{other} degrades the circuits more than PROTECT",
                    "below": f"PROTECT degrades the circuits more than {other}",
                    "covers": f"no difference in circuit vulnerability from {other} is resolved"}.get(side, "n/a")
            circ.append(f"DCV({other}, PROTECT) = {ci_text(m['dcv'], m['ci95'])}: {word}")
    if fast is None:
        head = ("Whether circuit protection buys SFT's speed is undefined here; it "
                + ("keeps" if keeps else "does not keep") + " RL's retention")
    elif fast and keeps:
        head = "Circuit protection buys SFT's speed with RL's retention"
    elif not (fast or keeps):
        head = "Circuit protection buys neither SFT's speed nor RL's retention"
    else:
        head = "Circuit protection buys only part of it: " + ("SFT's speed but not RL's retention" if fast
                                                             else "RL's retention but not SFT's speed")
    return f"{head}: {speed}; {keep}." + (" " + "; ".join(circ) + "." if circ else "")


def build(d: ReportData, figdir: Path) -> tuple[str, dict]:
    """The markdown text and a summary of its computed numbers; figures are written to `figdir`."""
    sc, fg = d.score, d.forgetting
    arms = list(sc["arms"])
    pairs = [tuple(p) for p in sc["pairs"]]
    a, b = pairs[0]
    head = f"{a}-{b}"
    arms_f = fg["arms"]
    caps = sorted(sc["base_circuits"])
    curves = {arm: arms_f[arm]["curve"] for arm in arms}

    # Figures.
    figures.curves(curves, "target_accuracy", "target eval accuracy", figdir / "target-accuracy.png")
    figures.curves(curves, "prior_accuracy", "prior-capability accuracy (mean)", figdir / "prior-accuracy.png")
    pts = {arm: [(c["target_accuracy"], c["prior_accuracy"]) for v in arms_f[arm]["seeds"].values()
                 for c in v["checkpoints"][1:]] for arm in arms}
    figures.pareto(pts, curves, figdir / "pareto.png")
    for c in caps:
        figures.heads(d.heads[head][c], figdir / f"heads-{c}.png")
    for x, y in pairs:
        cmp = sc["comparisons"][f"{x}-{y}"]
        bar_rows = []
        for c in caps + ["mean"]:
            v = cmp["mean"] if c == "mean" else cmp["capabilities"][c]
            e = v["equal_accuracy"] or {"dcv": None, "ci95": {"low": None, "high": None}}  # None: no level within tolerance
            bar_rows.append({"capability": c, "equal_steps": {"dcv": v["dcv"], **v["ci95"]},
                             "equal_accuracy": {"dcv": e["dcv"], **e["ci95"]}})
        figures.dcv_bars(bar_rows, figdir / f"dcv-{x}-{y}.png", f"DCV = CV({x.upper()}) − CV({y.upper()})")
    points = checkpoint_points(d)
    pred_tables = sc["predictors"]
    predictor_figure(points, pred_tables["model"], figdir / "forgetting-vs-predictors.png")
    paired = paired_points(points, a, b)
    fit_dcv = r_squared([p["dcv"] for p in paired], [p["d_forgetting"] for p in paired])
    fit_dkl = r_squared([p["d_forward_kl"] for p in paired], [p["d_forgetting"] for p in paired])
    pg = ["pair"] * len(paired)
    A, B = a.upper(), b.upper()
    figures.scatter_fits([
        {"x": [p["dcv"] for p in paired], "y": [p["d_forgetting"] for p in paired], "group": pg, "fit": fit_dcv,
         "xlabel": f"DCV = CV({A}) − CV({B})", "ylabel": f"forgetting {A} − {B}"},
        {"x": [p["d_forward_kl"] for p in paired], "y": [p["d_forgetting"] for p in paired], "group": pg,
         "fit": fit_dkl, "xlabel": f"forward KL {A} − {B}", "ylabel": f"forgetting {A} − {B}"}],
        figdir / "forgetting-vs-dcv-paired.png")

    # Verdict (the headline pair), then the protected arm's.
    hc = sc["comparisons"][head]
    adapt_text, adapt = adaptation_verdict(arms_f, a, b, fg["adaptation_fraction"])
    forget_text, forgets_more = forgetting_verdict(arms_f, a, b)
    dcv_steps = dcv_verdict(f"at equal steps (step {sc['equal_steps']['step']})", hc["mean"]["dcv"],
                            hc["mean"]["ci95"], sum(ci_side(hc["capabilities"][c]["ci95"]) == "above" for c in caps),
                            len(caps), a, b)
    dcv_acc = equal_accuracy_verdict(hc, caps, a, b)
    pred = predictor_verdict(pred_tables["capability"], "capability")
    paired_text = (f"Paired by seed and step ({fit_dcv['n']} pairs), DCV({A}, {B}) explains R² = "
                   f"{fmt(fit_dcv['r2'], 2)} of the difference in forgetting between the arms, the difference in "
                   f"forward KL R² = {fmt(fit_dkl['r2'], 2)}.")
    protect = protection_verdict(arms_f, sc["comparisons"], fg["adaptation_fraction"])
    # Every other pair without an arm of its own verdict (protect's): e.g. the study's SFT vs RL continued from SFT.
    others = [f"{x.upper()} vs {y.upper()}: " + dcv_verdict(
                  f"at equal steps (step {pair_step(sc, f'{x}-{y}')})", sc["comparisons"][f"{x}-{y}"]["mean"]["dcv"],
                  sc["comparisons"][f"{x}-{y}"]["mean"]["ci95"],
                  sum(ci_side(sc["comparisons"][f"{x}-{y}"]["capabilities"][c]["ci95"]) == "above" for c in caps),
                  len(caps), x, y) + step_gap(arms_f, (x, y)) + " " + equal_accuracy_verdict(
                  sc["comparisons"][f"{x}-{y}"], caps, x, y)
              for x, y in pairs[1:] if protect is None or "protect" not in (x, y)]

    summary = {
        "arms": arms, "pairs": [list(p) for p in pairs], "headline": head,
        "adapts_faster": adapt, "forgets_more": forgets_more,
        "adaptation_steps": {x: arms_f[x]["adaptation_steps"] for x in arms},
        "forgetting": {x: arms_f[x]["forgetting"] for x in arms},
        "dcv": {name: {"equal_steps": {"dcv": c["mean"]["dcv"], "ci95": c["mean"]["ci95"], "side": ci_side(c["mean"]["ci95"])},
                       "equal_accuracy": None if c["mean"]["equal_accuracy"] is None else
                       {"dcv": c["mean"]["equal_accuracy"]["dcv"], "ci95": c["mean"]["equal_accuracy"]["ci95"],
                        "side": ci_side(c["mean"]["equal_accuracy"]["ci95"]),
                        "level": c["mean"]["equal_accuracy"]["level"], "gap": c["mean"]["equal_accuracy"]["gap"]}}
                for name, c in sc["comparisons"].items()},
        "r2": {level: {name: {k: t["predictors"][name][k]["r2"] for k in ("pooled", "arm_fe")}
                       for name in t["predictors"]} for level, t in pred_tables.items()},
        "cv_vs_logit_diff_drop": {level: {k: v["verdict"] for k, v in t["cv_vs_logit_diff_drop"].items()}
                                  for level, t in pred_tables.items()},
        "paired": {"d_forgetting_vs_dcv": fit_dcv, "d_forgetting_vs_d_forward_kl": fit_dkl},
        "sanity_passed": {k: v["passed"] for k, v in sc["sanity"].items() if isinstance(v, dict) and "passed" in v},
    }
    if protect is not None:
        summary["protection"] = protect
    study_md, study_summary = study.section(sc, sc["comparisons"], figdir,
                                            {x: arms_f[x]["forward_kl"] for x in arms})
    if study_summary:
        summary["study"] = study_summary

    names = ", ".join(x.upper() for x in arms)
    md = [f"# Which circuits does fine-tuning break? {names}", "",
          f"Generated by `dcv stage report` from the metrics of this pipeline run; every number below is read or computed "
          f"from `metrics/*.json`, `measurements/*.csv` and `plots/`. Definitions: `docs/design.md`, \"Measures\". "
          f"DCV(a, b) = CV(a) − CV(b): > 0 means arm a degrades the base circuits more; the headline pair is {A} vs {B}.", "",
          "## Verdict", "",
          f"- {adapt_text}", f"- {forget_text}", f"- {dcv_steps}", f"- {dcv_acc}", f"- {pred}", f"- {paired_text}"]
    if protect is not None:
        md += [f"- {protect}"]
    md += [f"- {o}" for o in others]
    md += ["", "## Setup", "", _setup(d, arms), "",
           "## Adaptation and forgetting", "",
           _figure("target-accuracy.png", f"Target eval accuracy against optimizer step, {names}: mean over seeds (line) and min–max over seeds (band); step 0 is the base{starts_text(arms_f, arms)}."), "",
           _figure("prior-accuracy.png", "Mean prior-capability probe accuracy against step: mean over seeds (line) and min–max over seeds (band)."), "",
           _figure("pareto.png", "Target accuracy against prior accuracy: every checkpoint of every seed (dots), each arm's mean path (line), the base (star); up and right is better."), "",
           _table(["arm", "target accuracy", "prior accuracy", "forgetting", "forward KL", "steps to adapt"],
                  [[x.upper(), fmt(arms_f[x]["target_accuracy"]), fmt(arms_f[x]["prior_accuracy"]),
                    f"{fmt(arms_f[x]['forgetting'])} ± {fmt(arms_f[x]['forgetting_sd'])}", fmt(arms_f[x]["forward_kl"]),
                    fmt(arms_f[x]["adaptation_steps"], 0) + f" ({arms_f[x]['adapted_seeds']}/{len(arms_f[x]['seeds'])} seeds)"]
                   for x in arms]), "",
           f"*Final step, mean over seeds (± sample standard deviation over seeds). Steps to adapt: first checkpoint whose "
           f"target accuracy covers {fg['adaptation_fraction'] * 100:.0f}% of the way from the base's to the arm's final accuracy.*", "",
           _table(["capability", "base accuracy"] + [f"{x.upper()} accuracy" for x in arms]
                  + [f"{x.upper()} forgetting" for x in arms],
                  [[c, fmt(fg["base"]["capabilities"][c]["accuracy"])]
                   + [fmt(arms_f[x]["capabilities"][c]["accuracy"]) for x in arms]
                   + [fmt(arms_f[x]["capabilities"][c]["forgetting"]) for x in arms]
                   for c in sorted(fg["base"]["capabilities"])]), "",
           "*Per capability at the final step, mean over seeds.*", "",
           "## Circuits", ""]
    md += [_c0_table(sc), "",
           "*C0 is chosen on the discovery split (F there) and scored on the scoring split (F of the same heads on those "
           "held-out pairs). P by chance: the expected preserved fraction if the model's top-|C0| were random heads "
           "(|C0| / K). Unstable heads (base effect small against C0's mean, within 2 standard errors of 0, or of the "
           "other sign than on the discovery split) get no v_h or cross-model ratio; CV keeps them at their small "
           "weight.*", ""]
    for c in caps:
        v = sc["base_circuits"][c]
        md += [_figure(f"heads-{c}.png", f"{c}: head vulnerability v_h on the base circuit C0 ({v['base_circuit']['k']} heads, "
                                         f"F = {fmt(v['base_circuit']['faithfulness'], 2)}) for {A}, {B} and their difference, "
                                         f"step {sc['equal_steps']['step']}, mean over seeds; grey: heads outside C0."), ""]
    for x, y in pairs:
        cmp = sc["comparisons"][f"{x}-{y}"]
        md += [f"### {x.upper()} vs {y.upper()}", "", _cmp_table(sc, cmp, [x, y]), "",
               f"*At equal steps (step {pair_step(sc, f'{x}-{y}')}), mean over seeds.{step_gap(arms_f, (x, y))} CV: circuit vulnerability; P: preserved "
               f"fraction of C0 in the model's own top-|C0|; rank corr.: Spearman of all heads' |mean e_h| with the base's; F retained: "
               f"F(C0|Mx)/F(C0|M0) (undefined when Mx lost the signal it divides by); cross-model: Mx's head outputs patched into "
               f"the base, weighted like CV (0 = same job); LD drop: 1 − LD(Mx)/LD(M0) on the same scoring pairs.*", "",
               _interval_table(cmp, [x, y]), "",
               "*Intervals of DCV at equal steps. The headline interval is the t one (seeds and probe pairs); the crossed "
               "bootstrap understates the seed variance with few seeds, Welch's t over seeds ignores the probe pairs "
               "(`bench/coverage.py` measures each); the permutation p over seeds cannot go below the min shown.*", "",
               _levels_table(cmp, [x, y]), "",
               "*Equal target accuracy: each seed's measures interpolated in target accuracy between the two checkpoints "
               "around the level (step 0 is the base, or the checkpoint an arm continues; weights shown). Gap: the largest distance from the level to the "
               "nearer measured checkpoint of any seed; beyond the tolerance a level is listed but is no headline. "
               "Forgetting is interpolated alike.*", "",
               _figure(f"dcv-{x}-{y}.png", f"DCV({x.upper()}, {y.upper()}) per capability and its mean, with 95% intervals, at equal steps and at the headline equal-accuracy level (if any); above 0: {x.upper()} degrades the circuit more."), ""]
    md += ["## What predicts forgetting", "",
           _figure("forgetting-vs-predictors.png", "Forgetting (forgetting split) against each predictor across every checkpoint with circuits (means over capabilities), all arms and seeds, with the pooled least-squares line; titles: pooled R² with its run-clustered 95% interval."), "",
           *[x for level in ("capability", "model") if level in pred_tables for x in (_r2_table(pred_tables[level], arms, level), "")],
           "*R² of forgetting against each predictor: pooled over arms, within each arm, and with an arm fixed effect "
           "(the share of forgetting's variance around each arm's mean that the predictor explains); 95% intervals "
           "resample whole runs (arm, seed) within each arm, since a run's checkpoints are not independent.*", "",
           _figure("forgetting-vs-dcv-paired.png", f"Difference in forgetting ({A} − {B}) against DCV (left) and against the difference in forward KL (right), paired by seed and step: R² {fmt(fit_dcv['r2'], 2)} and {fmt(fit_dkl['r2'], 2)} (checkpoints of a run pooled as points: no interval)."), "",
           *_lm_eval(fg, arms),
           *study_md,
           "## Sanity checks", "",
           _sanity(sc["sanity"]), ""]
    return "\n".join(md), summary


def _lm_eval(fg: dict, arms: list[str]) -> list[str]:
    """A table of the lm-evaluation-harness results, when stage evaluate-forgetting ran them."""
    lm = fg.get("lm_eval")
    if not lm:
        return []
    rows = [[name, fmt(v0)] + [fmt(lm["drop"][x].get(name)) for x in arms] for name, v0 in sorted(lm["base"].items())]
    return ["## Standard benchmarks", "",
            _table(["task / metric", "base"] + [f"drop {x.upper()}" for x in arms], rows), "",
            "*lm-evaluation-harness on local tasks; drop = base − fine-tuned (final checkpoint), mean over seeds.*", ""]


def _sanity(s: dict) -> str:
    def ok(v: dict) -> str:
        return "passed" if v.get("passed") else "FAILED"

    z = s["zeroed_vs_base"]
    rows = [["DCV of the base against itself (must be 0, interval [0, 0])", f"{ci_text(s['self']['dcv'], s['self']['ci95'])} — {ok(s['self'])}"],
            ["CV of the base against itself (must be 0)", fmt(s["base_cv"])],
            ["CV of the base with its C0 heads zeroed (must be 1); smallest v_h", f"{fmt(s['ablated_cv'])}; {fmt(s['ablated_v_min'])}"],
            ["label permutation within probe pairs, the base against itself with C0 zeroed (must reject at 5%)",
             f"p = {fmt(z['p'], 4)} — {ok(z)}"]]
    sa = s.get("same_arm_seeds", {})
    if "skipped" in sa:
        rows.append(["two seeds of one arm compared as arms (must not reject)", f"skipped: {sa['skipped']}"])
    elif sa:
        po = sa["pairs_only_permutation"]
        rows.append([f"seeds {sa['seeds'][0]} and {sa['seeds'][1]} of {sa['arm'].upper()} compared as two arms with the "
                     f"headline test, seed variance pooled from the other runs (must not reject)",
                     f"{ci_text(sa['dcv'], sa['ci95'])} — {ok(sa)}"])
        rows.append(["the same two seeds, pairs-only permutation (diagnostic: rejects when seeds differ beyond probe noise)",
                     f"p = {fmt(po['p'], 4)} ({'rejects' if po['rejected'] else 'does not reject'})"])
    return _table(["check", "value"], rows)


def _r2_table(t: dict, arms: list[str], level: str) -> str:
    from dcv.report.stats import r2_text

    preds = [t["predictors"][n] for n in t.get("order", sorted(t["predictors"]))]
    rows = [[v["label"] + f" ({v['source']})", r2_text(v["pooled"])] + [r2_text(v["within"][a]) for a in arms]
            + [r2_text(v["arm_fe"])] for v in preds]
    c = t["cv_vs_logit_diff_drop"]
    rows.append(["CV − LD drop (R² difference)", f"{fmt(c['pooled']['delta_r2'], 2)} [{fmt(c['pooled']['ci95'].get('low'), 2)}, "
                 f"{fmt(c['pooled']['ci95'].get('high'), 2)}] {c['pooled']['verdict']}"] + ["" for _ in arms]
                + [f"{fmt(c['arm_fe']['delta_r2'], 2)} [{fmt(c['arm_fe']['ci95'].get('low'), 2)}, "
                   f"{fmt(c['arm_fe']['ci95'].get('high'), 2)}] {c['arm_fe']['verdict']}"])
    unit = {"model": "per checkpoint", "capability": "per checkpoint and capability"}[level]
    return (f"**{unit}** ({t['n_points']} points, {t['n_runs']} runs)\n\n"
            + _table(["predictor", "R² pooled"] + [f"R² within {a.upper()}" for a in arms] + ["R² arm fixed effect"], rows))


def predictor_figure(points: list[dict], table: dict, path: Path) -> None:
    """Forgetting against each registered predictor (one panel each), coloured by arm, with the pooled fit."""
    from dcv.report.stats import r2_text

    panels = []
    for name in table.get("order", sorted(table["predictors"])):
        v = table["predictors"][name]
        fit = dict(r_squared([p.get(name) for p in points], [p["forgetting"] for p in points]))
        xs = [np.nan if p.get(name) is None else p[name] for p in points]
        panels.append({"x": xs, "y": [p["forgetting"] for p in points], "group": [p["arm"] for p in points],
                       "fit": fit, "title": f"R² {r2_text(v['pooled'])}", "xlabel": v["label"], "ylabel": "forgetting"})
    figures.scatter_fits(panels, path)
