"""reports/report.md: the setup, the figures with one-line captions, the tables and a verdict, all computed from
the metrics and plot data of the earlier stages (no number is typed in)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcv.report import figures
from dcv.report.stats import (adaptation_verdict, ci_side, ci_text, dcv_verdict, fmt, forgetting_verdict,
                              predictor_verdict, r_squared)


@dataclass
class ReportData:
    setup: dict  # from params: base, target data, arms' settings, seeds
    base: dict  # metrics/base.json
    arms: dict[str, dict]  # metrics/<arm>.json
    forgetting: dict  # metrics/evaluate-forgetting.json
    score: dict  # metrics/score-dcv.json
    heads: dict[str, dict]  # plots/dcv/heads/<capability>.json
    circuit_rows: list[dict]  # plots/dcv/checkpoints.csv


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _figure(name: str, caption: str) -> str:
    return f"![{caption}](figures/{name})\n\n*{caption}*"


def checkpoint_points(d: ReportData) -> list[dict]:
    """Every checkpoint with circuits: arm, seed, step, forgetting, forward KL and CV (mean over capabilities)."""
    cv: dict[tuple, list[float]] = {}
    for r in d.circuit_rows:
        if r["cv"] is not None:
            cv.setdefault((r["arm"], int(r["seed"]), int(r["step"])), []).append(float(r["cv"]))
    out = []
    for arm, a in d.forgetting["arms"].items():
        for s, v in a["seeds"].items():
            for c in v["checkpoints"][1:]:
                key = (arm, int(s), int(c["step"]))
                if key in cv:
                    out.append({"arm": arm, "seed": int(s), "step": int(c["step"]), "forgetting": c["forgetting"],
                                "forward_kl": c["forward_kl"], "cv": float(np.mean(cv[key]))})
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


def _setup(d: ReportData, a: str, b: str) -> str:
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
            ["target task", f"{s['target']['source']} multiple choice: {s['target']['n_train']} train / "
                            f"{s['target']['n_eval']} eval rows; base accuracy {fmt(fg['base']['target_accuracy'], 2)}"],
            ["seeds", ", ".join(str(x) for x in s["seeds"])]]
    for arm in (a, b):
        cfg, m = s["arms"][arm], d.arms[arm]
        bud = m["budget"]
        what = (f"SFT (TRL SFTTrainer) on the `{cfg['completion_form']}` completion form" if arm == "sft" else
                f"GRPO (TRL GRPOTrainer), {cfg['num_generations']} generations per prompt, beta {cfg['beta']}"
                if arm == "rl" else arm)
        wall = [v["wall_s"] for v in m["seeds"].values()]
        rows.append([f"arm `{arm}`", f"{what}; {cfg['finetune']} fine-tuning, lr {cfg['learning_rate']:g}; "
                                     f"{bud['max_steps']} steps × {bud['prompts_per_step']} prompts, checkpoints at "
                                     f"{_steps(bud)}; {fmt(float(np.mean(wall)), 0)} s per seed"])
    c0 = ", ".join(f"{c} {v['base_circuit']['k']}" + ("" if v["base_circuit"]["reached"] else " (target not reached)")
                   for c, v in sorted(sc["capabilities"].items()))
    methods = sorted({v["method"] for v in sc["capabilities"].values()})
    rows.append(["circuits", f"head effects by `{'/'.join(methods)}` patching on "
                             f"{', '.join(sorted({str(v['n_pairs']) for v in sc['capabilities'].values()}))} probe pairs; "
                             f"base circuit C0 = smallest base top-k with faithfulness ≥ {sc['faithfulness_target']}: "
                             f"{c0} heads"])
    one = " (one seed: the CIs reflect probe-pair resampling only)" if len(sc["seeds"]) == 1 else ""
    rows.append(["statistics", f"95% CIs: {sc['n_bootstrap']} bootstrap draws, seeds resampled across runs and probe "
                               f"pairs within each seed{one}; equal steps = step {sc['equal_steps']['step']}, equal target "
                               f"accuracy = {fmt(sc['equal_accuracy']['headline_level'])} (each seed's nearest checkpoint)"])
    return _table(["", ""], rows)


def build(d: ReportData, figdir: Path) -> tuple[str, dict]:
    """The markdown text and a summary of its computed numbers; figures are written to `figdir`."""
    sc, fg = d.score, d.forgetting
    a, b = sc["arms"][0], sc["arms"][1]
    arms_f = fg["arms"]
    caps = sorted(sc["capabilities"])
    curves = {arm: arms_f[arm]["curve"] for arm in (a, b)}

    # Figures.
    figures.curves(curves, "target_accuracy", "target eval accuracy", figdir / "target-accuracy.png")
    figures.curves(curves, "prior_accuracy", "prior-capability accuracy (mean)", figdir / "prior-accuracy.png")
    pts = {arm: [(c["target_accuracy"], c["prior_accuracy"]) for v in arms_f[arm]["seeds"].values()
                 for c in v["checkpoints"][1:]] for arm in (a, b)}
    figures.pareto(pts, curves, figdir / "pareto.png")
    for c in caps:
        figures.heads(d.heads[c], figdir / f"heads-{c}.png")
    bar_rows = []
    for c in caps + ["mean"]:
        v = sc["mean"] if c == "mean" else sc["capabilities"][c]
        bar_rows.append({"capability": c,
                         "equal_steps": {"dcv": v["dcv"], **v["ci95"]},
                         "equal_accuracy": {"dcv": v["equal_accuracy"]["dcv"], **v["equal_accuracy"]["ci95"]}})
    figures.dcv_bars(bar_rows, figdir / "dcv.png")
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
    figures.scatter_fits([
        {"x": [p["dcv"] for p in paired], "y": [p["d_forgetting"] for p in paired], "group": pg, "fit": fit_dcv,
         "xlabel": f"DCV = CV({a.upper()}) − CV({b.upper()})", "ylabel": f"forgetting {a.upper()} − {b.upper()}"},
        {"x": [p["d_forward_kl"] for p in paired], "y": [p["d_forgetting"] for p in paired], "group": pg,
         "fit": fit_dkl, "xlabel": f"forward KL {a.upper()} − {b.upper()}", "ylabel": f"forgetting {a.upper()} − {b.upper()}"}],
        figdir / "forgetting-vs-dcv-paired.png")

    # Verdict.
    adapt_text, adapt = adaptation_verdict(arms_f, a, b, fg["adaptation_fraction"])
    forget_text, forgets_more = forgetting_verdict(arms_f, a, b)
    ea = sc["mean"]["equal_accuracy"]
    above = lambda key: sum(ci_side((sc["capabilities"][c] if key is None else sc["capabilities"][c][key])["ci95"]) == "above"  # noqa: E731
                            for c in caps)
    dcv_steps = dcv_verdict(f"at equal steps (step {sc['equal_steps']['step']})", sc["mean"]["dcv"],
                            sc["mean"]["ci95"], above(None), len(caps), a, b)
    dcv_acc = dcv_verdict(f"at equal target accuracy ({fmt(ea['level'])})", ea["dcv"], ea["ci95"],
                          above("equal_accuracy"), len(caps), a, b)
    pred = predictor_verdict(fit_cv, fit_kl)
    paired_text = (f"Paired by seed and step ({fit_dcv['n']} pairs), DCV explains R² = {fmt(fit_dcv['r2'], 2)} of the "
                   f"difference in forgetting between the arms, the difference in forward KL R² = {fmt(fit_dkl['r2'], 2)}.")

    summary = {
        "arms": [a, b],
        "adapts_faster": adapt, "forgets_more": forgets_more,
        "adaptation_steps": {x: arms_f[x]["adaptation_steps"] for x in (a, b)},
        "forgetting": {x: arms_f[x]["forgetting"] for x in (a, b)},
        "dcv": {"equal_steps": {"dcv": sc["mean"]["dcv"], "ci95": sc["mean"]["ci95"], "side": ci_side(sc["mean"]["ci95"])},
                "equal_accuracy": {"dcv": ea["dcv"], "ci95": ea["ci95"], "side": ci_side(ea["ci95"]), "level": ea["level"]}},
        "r2": {"forgetting_vs_cv": fit_cv, "forgetting_vs_forward_kl": fit_kl,
               "d_forgetting_vs_dcv": fit_dcv, "d_forgetting_vs_d_forward_kl": fit_dkl},
    }

    A, B = a.upper(), b.upper()
    md = [f"# Which circuits does fine-tuning break? {A} vs {B}", "",
          f"Generated by `dcv stage report` from the metrics of this pipeline run; every number below is read or computed "
          f"from `metrics/*.json` and `plots/`. Definitions: `shared/DESIGN.md`, \"Measures\". "
          f"DCV = CV({A}) − CV({B}): > 0 means {A} degrades the base circuits more.", "",
          "## Verdict", "",
          f"- {adapt_text}", f"- {forget_text}", f"- {dcv_steps}", f"- {dcv_acc}", f"- {pred}", f"- {paired_text}", "",
          "## Setup", "", _setup(d, a, b), "",
          "## Adaptation and forgetting", "",
          _figure("target-accuracy.png", f"Target eval accuracy against optimizer step, {A} vs {B}: mean over seeds (line) and min–max over seeds (band); step 0 is the base."), "",
          _figure("prior-accuracy.png", "Mean prior-capability probe accuracy against step: mean over seeds (line) and min–max over seeds (band)."), "",
          _figure("pareto.png", "Target accuracy against prior accuracy: every checkpoint of every seed (dots), each arm's mean path (line), the base (star); up and right is better."), "",
          _table(["arm", "target accuracy", "prior accuracy", "forgetting", "forward KL", "steps to adapt"],
                 [[x.upper(), fmt(arms_f[x]["target_accuracy"]), fmt(arms_f[x]["prior_accuracy"]),
                   f"{fmt(arms_f[x]['forgetting'])} ± {fmt(arms_f[x]['forgetting_std'])}", fmt(arms_f[x]["forward_kl"]),
                   fmt(arms_f[x]["adaptation_steps"], 0) + f" ({arms_f[x]['adapted_seeds']}/{len(arms_f[x]['seeds'])} seeds)"]
                  for x in (a, b)]), "",
          f"*Final step, mean over seeds (± standard deviation over seeds). Steps to adapt: first checkpoint whose target "
          f"accuracy covers {fg['adaptation_fraction'] * 100:.0f}% of the way from the base's to the arm's final accuracy.*", "",
          _table(["capability", "base accuracy"] + [f"{x.upper()} accuracy" for x in (a, b)]
                 + [f"{x.upper()} forgetting" for x in (a, b)],
                 [[c, fmt(fg["base"]["capabilities"][c]["accuracy"])]
                  + [fmt(arms_f[x]["capabilities"][c]["accuracy"]) for x in (a, b)]
                  + [fmt(arms_f[x]["capabilities"][c]["forgetting"]) for x in (a, b)]
                  for c in sorted(fg["base"]["capabilities"])]), "",
          "*Per capability at the final step, mean over seeds.*", "",
          "## Circuits", ""]
    for c in caps:
        v = sc["capabilities"][c]
        md += [_figure(f"heads-{c}.png", f"{c}: head vulnerability v_h on the base circuit C0 ({v['base_circuit']['k']} heads, "
                                         f"F = {fmt(v['base_circuit']['faithfulness'], 2)}) for {A}, {B} and their difference, "
                                         f"step {sc['equal_steps']['step']}, mean over seeds; grey: heads outside C0."), ""]
    md += [_table(["capability", f"CV {A}", f"CV {B}", "DCV [95% CI]", f"P {A}", f"P {B}", f"rank corr. {A}",
                   f"rank corr. {B}", f"F retained {A}", f"F retained {B}", f"cross-model {A}", f"cross-model {B}"],
                  [[c] + [fmt(sc["capabilities"][c]["cv"][x]) for x in (a, b)] + [ci_text(sc["capabilities"][c]["dcv"], sc["capabilities"][c]["ci95"])]
                   + [fmt(sc["capabilities"][c][k][x]) for k in ("preserved", "rank_correlation", "faithfulness_retained", "cross_model_cv") for x in (a, b)]
                   for c in caps]
                  + [["**mean**"] + [fmt(sc["mean"]["cv"][x]) for x in (a, b)] + [ci_text(sc["mean"]["dcv"], sc["mean"]["ci95"])]
                     + [fmt(sc["mean"][k][x]) for k in ("preserved", "rank_correlation", "faithfulness_retained", "cross_model_cv") for x in (a, b)]]), "",
           f"*At equal steps (step {sc['equal_steps']['step']}), mean over seeds. CV: circuit vulnerability; P: preserved "
           f"fraction of C0 in the model's own top-|C0|; rank corr.: Spearman of all heads' |e_h| with the base; F retained: "
           f"F(C0|Mx)/F(C0|M0); cross-model: Mx's head outputs patched into the base, weighted like CV (0 = same job).*", "",
           _table(["target accuracy level", f"{A} checkpoints (accuracy)", f"{B} checkpoints (accuracy)", "DCV [95% CI], mean over capabilities"],
                  [[fmt(lv["level"]),
                    ", ".join(str(st) for _, st in sorted(lv["checkpoints"][a].items())) + f" ({fmt(lv['target_accuracy'][a], 2)})",
                    ", ".join(str(st) for _, st in sorted(lv["checkpoints"][b].items())) + f" ({fmt(lv['target_accuracy'][b], 2)})",
                    ci_text(lv["dcv"]["mean"], lv["ci95"]["mean"])] for lv in sc["equal_accuracy"]["levels"]]), "",
           "*Equal target accuracy: for each level, each seed's checkpoint (with circuits) whose target eval accuracy is nearest to it (steps listed by seed).*", "",
           _figure("dcv.png", "DCV per capability and its mean, with 95% bootstrap CIs, at equal steps and at equal target accuracy; above 0: SFT degrades the circuit more."), "",
           "## What predicts forgetting", "",
           _figure("forgetting-vs-cv-and-kl.png", f"Forgetting against circuit vulnerability (left) and forward KL (right) across every checkpoint with circuits, all arms and seeds, with least-squares lines: R² {fmt(fit_cv['r2'], 2)} and {fmt(fit_kl['r2'], 2)}."), "",
           _figure("forgetting-vs-dcv-paired.png", f"Difference in forgetting ({A} − {B}) against DCV (left) and against the difference in forward KL (right), paired by seed and step: R² {fmt(fit_dcv['r2'], 2)} and {fmt(fit_dkl['r2'], 2)}."), "",
           *_lm_eval(fg, a, b),
           "## Sanity checks", "",
           _sanity(sc["sanity"]), ""]
    return "\n".join(md), summary


def _lm_eval(fg: dict, a: str, b: str) -> list[str]:
    """A table of the lm-evaluation-harness results, when stage evaluate-forgetting ran them."""
    lm = fg.get("lm_eval")
    if not lm:
        return []
    rows = []
    for task in lm["tasks"]:
        for metric, v0 in sorted(lm["models"]["base"].get(task, {}).items()):
            drop = [fmt(lm["forgetting"][x].get(task, {}).get(metric)) for x in (a, b)]
            rows.append([task, metric, fmt(v0)] + drop)
    limit = f"at most {lm['limit']} documents per task" if lm.get("limit") else "all documents"
    return ["## Standard benchmarks", "",
            _table(["task", "metric", "base", f"drop {a.upper()}", f"drop {b.upper()}"], rows), "",
            f"*lm-evaluation-harness on local tasks, {limit}; drop = base − fine-tuned (final checkpoint), mean over seeds.*", ""]


def _sanity(s: dict) -> str:
    rows = [["DCV of the base against itself (must be 0)", ci_text(s["self"]["dcv"], s["self"]["ci95"])],
            ["CV of the base against itself (must be 0)", fmt(s["base_cv"])],
            ["CV of the base with its C0 heads zeroed (must be 1); smallest v_h", f"{fmt(s['ablated_cv'])}; {fmt(s['ablated_v_min'])}"],
            ["mean DCV with arm labels shuffled: 95% CI (should cover 0)",
             f"[{fmt(s['shuffled_arms']['ci95']['low'])}, {fmt(s['shuffled_arms']['ci95']['high'])}] — "
             + ("covers 0" if s["shuffled_arms"]["covers_zero"] else "does NOT cover 0")]]
    return _table(["check", "value"], rows)


def _steps(budget: dict) -> str:
    """Checkpoint steps of a budget: the list when written out, else the cadence."""
    steps = budget.get("checkpoint_steps")
    return ", ".join(str(x) for x in steps) if steps else f"every {budget['save_every']}"
