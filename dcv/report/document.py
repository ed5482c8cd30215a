"""reports/report.md: the setup, the figures with one-line captions, the tables and a verdict, all computed from
the metrics, the measurement table and the circuit scores of the earlier stages (no number is typed in). Every arm
of the run and every scored pair of arms appears; the first pair is the headline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcv.measurements import MeasurementTable
from dcv.report import figures
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


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _figure(name: str, caption: str) -> str:
    return f"![{caption}](figures/{name})\n\n*{caption}*"


def checkpoint_points(d: ReportData) -> list[dict]:
    """Every checkpoint with circuits: arm, seed, step, forgetting, forward KL (measurement table) and CV (mean
    over capabilities, circuit scores), joined by model id."""
    cv: dict[str, list[float]] = {}
    for r in d.circuit_scores:
        cv.setdefault(r.model, []).append(r.cv)
    out = []
    for mid, vals in sorted(cv.items()):
        first = d.table.first(mid)
        out.append({"arm": first.arm, "seed": first.seed, "step": first.step, "forgetting": d.table.forgetting(mid)["mean"],
                    "forward_kl": first.forward_kl, "cv": float(np.mean(vals))})
    return sorted(out, key=lambda p: (p["arm"], p["seed"], p["step"]))


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
    c0 = ", ".join(f"{c} {v['base_circuit']['k']}" + ("" if v["base_circuit"]["reached"] else " (target not reached)")
                   for c, v in sorted(sc["base_circuits"].items()))
    methods = sorted({v["method"] for v in sc["base_circuits"].values()})
    rows.append(["circuits", f"head effects by `{'/'.join(methods)}` patching on "
                             f"{', '.join(sorted({str(v['n_pairs']) for v in sc['base_circuits'].values()}))} probe pairs; "
                             f"base circuit C0 = smallest base top-k with faithfulness ≥ {sc['faithfulness_target']}: "
                             f"{c0} heads"])
    one = " (one seed: the CIs reflect probe-pair resampling only)" if len(sc["seeds"]) == 1 else ""
    rows.append(["statistics", f"95% CIs: {sc['n_bootstrap']} bootstrap draws, seeds resampled across runs and probe "
                               f"pairs within each seed{one}; equal steps = step {sc['equal_steps']['step']}; equal "
                               f"target accuracy: each seed's checkpoint nearest the level"])
    return _table(["", ""], rows)


def _cmp_table(sc: dict, cmp: dict, pair: list[str]) -> str:
    a, b = pair
    A, B = a.upper(), b.upper()
    caps = sorted(cmp["capabilities"])
    keys = ("preserved", "rank_correlation", "faithfulness_retained", "cross_model_cv")

    def row(name, v):
        return ([name] + [fmt(v["cv"][x]) for x in (a, b)] + [ci_text(v["dcv"], v["ci95"])]
                + [fmt(v[k][x]) for k in keys for x in (a, b)])

    return _table(["capability", f"CV {A}", f"CV {B}", "DCV [95% CI]", f"P {A}", f"P {B}", f"rank corr. {A}",
                   f"rank corr. {B}", f"F retained {A}", f"F retained {B}", f"cross-model {A}", f"cross-model {B}"],
                  [row(c, cmp["capabilities"][c]) for c in caps] + [row("**mean**", cmp["mean"])])


def _levels_table(cmp: dict, pair: list[str]) -> str:
    a, b = pair
    return _table(["target accuracy level", f"{a.upper()} checkpoints (accuracy)", f"{b.upper()} checkpoints (accuracy)",
                   "DCV [95% CI], mean over capabilities"],
                  [[fmt(lv["level"]),
                    ", ".join(str(st) for _, st in sorted(lv["checkpoints"][a].items())) + f" ({fmt(lv['target_accuracy'][a], 2)})",
                    ", ".join(str(st) for _, st in sorted(lv["checkpoints"][b].items())) + f" ({fmt(lv['target_accuracy'][b], 2)})",
                    ci_text(lv["dcv"]["mean"], lv["ci95"]["mean"])] for lv in cmp["equal_accuracy"]["levels"]])


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
            bar_rows.append({"capability": c, "equal_steps": {"dcv": v["dcv"], **v["ci95"]},
                             "equal_accuracy": {"dcv": v["equal_accuracy"]["dcv"], **v["equal_accuracy"]["ci95"]}})
        figures.dcv_bars(bar_rows, figdir / f"dcv-{x}-{y}.png", f"DCV = CV({x.upper()}) − CV({y.upper()})")
    points = checkpoint_points(d)
    fit_cv = r_squared([p["cv"] for p in points], [p["forgetting"] for p in points])
    fit_kl = r_squared([p["forward_kl"] for p in points], [p["forgetting"] for p in points])
    group = [p["arm"] for p in points]
    figures.scatter_fits([
        {"x": [p["cv"] for p in points], "y": [p["forgetting"] for p in points], "group": group, "fit": fit_cv,
         "xlabel": "circuit vulnerability CV (mean over capabilities)", "ylabel": "forgetting"},
        {"x": [p["forward_kl"] for p in points], "y": [p["forgetting"] for p in points], "group": group,
         "fit": fit_kl, "xlabel": "forward KL on target prompts (nats)", "ylabel": "forgetting"}],
        figdir / "forgetting-vs-cv-and-kl.png")
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
    ea = hc["mean"]["equal_accuracy"]
    above = lambda key: sum(ci_side((hc["capabilities"][c] if key is None else hc["capabilities"][c][key])["ci95"]) == "above"  # noqa: E731
                            for c in caps)
    dcv_steps = dcv_verdict(f"at equal steps (step {sc['equal_steps']['step']})", hc["mean"]["dcv"],
                            hc["mean"]["ci95"], above(None), len(caps), a, b)
    dcv_acc = dcv_verdict(f"at equal target accuracy ({fmt(ea['level'])})", ea["dcv"], ea["ci95"],
                          above("equal_accuracy"), len(caps), a, b)
    pred = predictor_verdict(fit_cv, fit_kl)
    paired_text = (f"Paired by seed and step ({fit_dcv['n']} pairs), DCV({A}, {B}) explains R² = "
                   f"{fmt(fit_dcv['r2'], 2)} of the difference in forgetting between the arms, the difference in "
                   f"forward KL R² = {fmt(fit_dkl['r2'], 2)}.")
    protect = protection_verdict(arms_f, sc["comparisons"], fg["adaptation_fraction"])

    summary = {
        "arms": arms, "pairs": [list(p) for p in pairs], "headline": head,
        "adapts_faster": adapt, "forgets_more": forgets_more,
        "adaptation_steps": {x: arms_f[x]["adaptation_steps"] for x in arms},
        "forgetting": {x: arms_f[x]["forgetting"] for x in arms},
        "dcv": {name: {"equal_steps": {"dcv": c["mean"]["dcv"], "ci95": c["mean"]["ci95"], "side": ci_side(c["mean"]["ci95"])},
                       "equal_accuracy": {"dcv": c["mean"]["equal_accuracy"]["dcv"], "ci95": c["mean"]["equal_accuracy"]["ci95"],
                                          "side": ci_side(c["mean"]["equal_accuracy"]["ci95"]),
                                          "level": c["mean"]["equal_accuracy"]["level"]}}
                for name, c in sc["comparisons"].items()},
        "r2": {"forgetting_vs_cv": fit_cv, "forgetting_vs_forward_kl": fit_kl,
               "d_forgetting_vs_dcv": fit_dcv, "d_forgetting_vs_d_forward_kl": fit_dkl},
    }
    if protect is not None:
        summary["protection"] = protect

    names = ", ".join(x.upper() for x in arms)
    md = [f"# Which circuits does fine-tuning break? {names}", "",
          f"Generated by `dcv stage report` from the metrics of this pipeline run; every number below is read or computed "
          f"from `metrics/*.json`, `measurements/*.csv` and `plots/`. Definitions: `docs/design.md`, \"Measures\". "
          f"DCV(a, b) = CV(a) − CV(b): > 0 means arm a degrades the base circuits more; the headline pair is {A} vs {B}.", "",
          "## Verdict", "",
          f"- {adapt_text}", f"- {forget_text}", f"- {dcv_steps}", f"- {dcv_acc}", f"- {pred}", f"- {paired_text}"]
    if protect is not None:
        md += [f"- {protect}"]
    md += ["", "## Setup", "", _setup(d, arms), "",
           "## Adaptation and forgetting", "",
           _figure("target-accuracy.png", f"Target eval accuracy against optimizer step, {names}: mean over seeds (line) and min–max over seeds (band); step 0 is the base."), "",
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
    for c in caps:
        v = sc["base_circuits"][c]
        md += [_figure(f"heads-{c}.png", f"{c}: head vulnerability v_h on the base circuit C0 ({v['base_circuit']['k']} heads, "
                                         f"F = {fmt(v['base_circuit']['faithfulness'], 2)}) for {A}, {B} and their difference, "
                                         f"step {sc['equal_steps']['step']}, mean over seeds; grey: heads outside C0."), ""]
    for x, y in pairs:
        cmp = sc["comparisons"][f"{x}-{y}"]
        md += [f"### {x.upper()} vs {y.upper()}", "", _cmp_table(sc, cmp, [x, y]), "",
               f"*At equal steps (step {sc['equal_steps']['step']}), mean over seeds. CV: circuit vulnerability; P: preserved "
               f"fraction of C0 in the model's own top-|C0|; rank corr.: Spearman of all heads' |e_h| with the base; F retained: "
               f"F(C0|Mx)/F(C0|M0); cross-model: Mx's head outputs patched into the base, weighted like CV (0 = same job).*", "",
               _levels_table(cmp, [x, y]), "",
               "*Equal target accuracy: for each level, each seed's checkpoint (with circuits) whose target eval accuracy is nearest to it (steps listed by seed).*", "",
               _figure(f"dcv-{x}-{y}.png", f"DCV({x.upper()}, {y.upper()}) per capability and its mean, with 95% bootstrap CIs, at equal steps and at equal target accuracy; above 0: {x.upper()} degrades the circuit more."), ""]
    md += ["## What predicts forgetting", "",
           _figure("forgetting-vs-cv-and-kl.png", f"Forgetting against circuit vulnerability (left) and forward KL (right) across every checkpoint with circuits, all arms and seeds, with least-squares lines: R² {fmt(fit_cv['r2'], 2)} and {fmt(fit_kl['r2'], 2)}."), "",
           _figure("forgetting-vs-dcv-paired.png", f"Difference in forgetting ({A} − {B}) against DCV (left) and against the difference in forward KL (right), paired by seed and step: R² {fmt(fit_dcv['r2'], 2)} and {fmt(fit_dkl['r2'], 2)}."), "",
           *_lm_eval(fg, arms),
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
    rows = [["DCV of the base against itself (must be 0)", ci_text(s["self"]["dcv"], s["self"]["ci95"])],
            ["CV of the base against itself (must be 0)", fmt(s["base_cv"])],
            ["CV of the base with its C0 heads zeroed (must be 1); smallest v_h", f"{fmt(s['ablated_cv'])}; {fmt(s['ablated_v_min'])}"],
            ["mean DCV with arm labels shuffled: 95% CI (should cover 0)",
             f"[{fmt(s['shuffled_arms']['ci95']['low'])}, {fmt(s['shuffled_arms']['ci95']['high'])}] — "
             + ("covers 0" if s["shuffled_arms"]["covers_zero"] else "does NOT cover 0")]]
    return _table(["check", "value"], rows)
