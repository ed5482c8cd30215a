"""The report's section "As the study measures it": the study's measures on its DBM masks (score-dcv's `study`
block) beside the numbers the study reports, and beside this pipeline's own DCV of the same pairs.

The reported numbers are data (`REPORTED`), typed once from the study's public notes and always printed as
*reported*; every other number of the section is read from the metrics."""

from __future__ import annotations

from pathlib import Path

from dcv.report import figures
from dcv.report.markdown import figure, table as _table
from dcv.report.stats import ci_side, ci_text, fmt

# arXiv 2605.28860 as its public notes report it (Qwen2.5-3B-Instruct, SciKnowEval chemistry, 576 heads). Its RL is
# Dr.GRPO continued from the SFT checkpoint: this pipeline's arm rl_sft; GRPO from the base (rl) has no counterpart.
REPORTED = {
    "source": "arXiv 2605.28860, Qwen2.5-3B-Instruct on SciKnowEval chemistry, 576 heads",
    "n_heads": 576,
    "base_size": 297,
    "arms": {"sft": {"size": 265, "overlap": 0.52, "retention": (0.635, 0.590)},
             "rl_sft": {"size": 296, "overlap": 0.68, "retention": (0.698, 0.725)}},
}


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def _ci_pct(v: dict) -> str:
    return f"{_pct(v['mean'])} [{_pct(v['low'])}, {_pct(v['high'])}]"


def _band(key: str, v: dict) -> dict:
    """A figure point: the mean and its interval as the band (the mean itself where there is none; NaN where the
    measure is undefined, e.g. overlap with an empty base circuit)."""
    m, lo, hi = (float("nan") if v[k] is None else v[k] for k in ("mean", "low", "high"))  # JSON null: NaN
    if lo != lo:  # no interval (one seed)
        lo = hi = m
    return {key: m, f"{key}_min": lo, f"{key}_max": hi}


def _reported_size(arm: str) -> str:
    r = REPORTED["arms"].get(arm)
    return "—" if r is None else f"~{r['size']} of {REPORTED['n_heads']} ({_pct(r['size'] / REPORTED['n_heads'])})"


def _reported_retention(arm: str) -> str:
    r = REPORTED["arms"].get(arm)
    return "—" if r is None else f"{_pct(r['retention'][0])} → {_pct(r['retention'][1])}"


def _beside(d: dict) -> str:
    """The seed bootstrap and the permutation p of a difference (score-dcv's `study.difference`), for beside its
    Welch interval; empty for a difference scored before they existed."""
    if "permutation" not in d:
        return ""
    b, p = d["bootstrap"], d["permutation"]
    return (f"seed bootstrap [{fmt(b['low'], 2)}, {fmt(b['high'], 2)}], permutation p {fmt(p['p'], 2)} "
            f"(the smallest these seeds' values allow: {fmt(p['min_p'], 2)})")


def _overlap_line(cap: str, st: dict, pair: tuple[str, str], comparisons: dict) -> tuple[str, str]:
    """One pair at its equal step: which arm keeps more of C0, against the study's direction (if both are
    reported); and the side of the difference's interval."""
    a, b = pair
    name = f"{a}-{b}"
    eq = st["pairs"][name]["equal_steps"]
    d = eq["difference"]["overlap"]
    side = ci_side(d)
    oa, ob = eq["arms"][a]["overlap"]["mean"], eq["arms"][b]["overlap"]["mean"]
    A, B = a.upper(), b.upper()
    what = {"below": f"{B} keeps more of the base circuit", "above": f"{A} keeps more of the base circuit",
            "covers": "no difference this run can tell (the interval covers 0)",
            "unknown": "no interval (one seed)"}[side]
    ra, rb = REPORTED["arms"].get(a), REPORTED["arms"].get(b)
    study = ""
    if ra and rb:
        agree = {"below": ra["overlap"] < rb["overlap"], "above": ra["overlap"] > rb["overlap"]}.get(side)
        study = (f" The study reports {A} {_pct(ra['overlap'])} and {B} {_pct(rb['overlap'])} (reported): "
                 + ("the same direction." if agree else "the opposite direction." if agree is False else
                    "this run does not decide its direction."))
    ours = comparisons[name]["mean"]
    text = (f"{A} vs {B}, {cap}, at equal steps (step {eq['step']}): overlap with the base's DBM circuit "
            f"{_pct(oa)} vs {_pct(ob)}, difference {ci_text(d['diff'], d)} (Welch; {_beside(d)}): {what}.{study} Under this pipeline's own "
            f"protocol (C0 by exact patching on the prior capabilities, CV): DCV({A}, {B}) = "
            f"{ci_text(ours['dcv'], ours['ci95'])}.")
    return text, side


def kl_line(kl: dict[str, float]) -> str | None:
    """The study's claim that its RL moves the output distribution more than SFT (reported), beside this run's forward
    KL to the base at each arm's final step; None without both arms."""
    a, b = "rl_sft", "sft"
    if a not in kl or b not in kl:
        return None
    x, y = kl[a], kl[b]
    same = "the same direction" if x > y else "the opposite direction" if x < y else "no difference"
    return (f"Output KL: the study reports its RL's output KL to the base above SFT's (*reported*, no figure). This run, "
            f"forward KL at the answer position at each arm's final step, mean over seeds: RL_SFT {fmt(x, 3)}, SFT "
            f"{fmt(y, 3)}: {same} (the arms' final steps differ; the forgetting section has every arm).")


def section(score: dict, comparisons: dict, figdir: Path, kl: dict[str, float] | None = None) -> tuple[list[str], dict]:
    """Markdown lines of the section and its summary (per capability: overlap and retention change per arm, the side
    of each pair's overlap difference); no lines when score-dcv has no study masks. `kl`: each arm's forward KL at
    its final step (evaluate-forgetting), for the study's output-KL claim."""
    s = score.get("study") or {}
    caps = s.get("capabilities") or {}
    if not caps:
        return [], {}
    arms, pairs = list(score["arms"]), [tuple(p) for p in score["pairs"]]
    md = ["## As the study measures it", "",
          f"The study ({REPORTED['source']}) fits a Differentiable Binary Masking head mask m_h on each model "
          f"separately, on counterfactuals of the science task itself, and reads its circuit as the heads with "
          f"m_h > 0.5. This run does the same on every checkpoint of every seed (`circuits/<model>/study/`, method "
          f"{s['method']}), against the base's mask: circuit size, overlap |C ∩ C0| / |C0| (by checkpoint: the study's "
          f"retention), Jaccard, mask shift m − m0, and vulnerable heads of a pair (C0 heads whose mask under a is below "
          f"b's by more than δ = {s['delta']}). Numbers marked *reported* are the study's, copied from its public notes "
          f"and not computed here; every other number is this run's. Intervals: t over seeds, clipped to each "
          f"measure's range (differences: Welch's t, with the seed bootstrap and the exact permutation p beside it); "
          f"one mask per model (DBM is not refit per probe-pair draw), so probe-pair noise is not in them.", ""]
    line = kl_line(kl or {})
    if line:
        md += [line, ""]
    summary = {}
    for cap, st in caps.items():
        n, n0 = st["base"]["n_heads"], st["base"]["size"]
        fin = {a: st["arms"][a]["by_step"][-1] for a in arms}
        ret = {a: st["arms"][a]["retention"] for a in arms}
        md += [f"### {cap}", "",
               _table(["model", "circuit size (reported)", "circuit size (this run)", "overlap with C0 (reported)",
                       "overlap with C0 (this run)", "retention first → last (reported)",
                       "retention first → last (this run)"],
                      [["base", f"{REPORTED['base_size']} of {REPORTED['n_heads']} "
                                f"({_pct(REPORTED['base_size'] / REPORTED['n_heads'])})",
                        f"{n0} of {n} ({_pct(n0 / n)})", "—", "—", "—", "—"]]
                      + [[f"{a.upper()} (step {fin[a]['step']})", _reported_size(a),
                          f"{fmt(fin[a]['size']['mean'], 1)} [{fmt(fin[a]['size']['low'], 1)}, "
                          f"{fmt(fin[a]['size']['high'], 1)}]",
                          "—" if a not in REPORTED["arms"] else f"~{_pct(REPORTED['arms'][a]['overlap'])}",
                          _ci_pct(fin[a]["overlap"]), _reported_retention(a),
                          f"{_pct(ret[a]['first']['mean'])} (step {ret[a]['first_step']}) → "
                          f"{_pct(ret[a]['last']['mean'])} (step {ret[a]['last_step']}); change "
                          f"{ci_text(ret[a]['change']['mean'], ret[a]['change'])}"]
                         for a in arms]), "",
               f"*Final step of each arm, mean over seeds [95% interval]. The study's RL is Dr.GRPO continued from "
               f"its SFT checkpoint (here RL_SFT); arms without a reported counterpart show —. Scales differ: C0 here "
               f"is {n0} of {n} heads, the study's {_pct(REPORTED['base_size'] / REPORTED['n_heads'])} of 576, so "
               f"agreement or not is evidence about this run's world, not about the study's model.*", ""]
        lines = [_overlap_line(cap, st, p, comparisons) for p in pairs]
        md += [f"- {t}" for t, _ in lines]
        md += [f"- Retention, {cap}: " + "; ".join(
            f"{a.upper()} {_pct(ret[a]['first']['mean'])} → {_pct(ret[a]['last']['mean'])} (change "
            f"{ci_text(ret[a]['change']['mean'], ret[a]['change'])})" for a in arms)
            + ". Reported: " + "; ".join(f"{a.upper()} {_reported_retention(a)}" for a in REPORTED["arms"]
                                         if a in arms) + " (the study: SFT's falls, RL's rises).", ""]
        pts = {a: [{"step": r["step"], **_band("overlap", r["overlap"])} for r in st["arms"][a]["by_step"]]
               for a in arms}
        figures.curves(pts, "overlap", "overlap with C0 (DBM)", figdir / f"study-overlap-{cap}.png")
        md += [figure(f"study-overlap-{cap}.png", f"{cap}: overlap of each checkpoint's DBM circuit with the base's "
                      f"(the study's retention) against step, mean over seeds (line) and 95% interval (band; none "
                      f"with one seed); step 0 is the model the arm started from."), "",
               _table(["arm", "step", "size", "overlap", "Jaccard", "mask shift on C0"],
                      [[a.upper(), r["step"], fmt(r["size"]["mean"], 1), _ci_pct(r["overlap"]), _ci_pct(r["jaccard"]),
                        ci_text(r["mask_shift_c0"]["mean"], r["mask_shift_c0"])]
                       for a in arms for r in st["arms"][a]["by_step"]]), "",
               "*Every step every seed of the arm has, mean over seeds [95% interval].*", ""]
        rows = []
        for a, b in pairs:
            p = st["pairs"][f"{a}-{b}"]
            for label, c in (("equal steps", p["equal_steps"]), ("equal accuracy", p["equal_accuracy"])):
                if c is None:
                    rows.append([f"{a.upper()} vs {b.upper()}", label, "no level within the tolerance", "", "", "", "", ""])
                    continue
                at = f"step {c['step']}" if "step" in c else f"accuracy {fmt(c['level'], 2)} (gap {fmt(c['gap'], 3)})"
                v, d = c["vulnerable"], c["difference"]["overlap"]
                rows.append([f"{a.upper()} vs {b.upper()}", f"{label}: {at}", _pct(c["arms"][a]["overlap"]["mean"]),
                             _pct(c["arms"][b]["overlap"]["mean"]), f"{ci_text(d['diff'], d)}; {_beside(d)}",
                             ci_text(v["a_below_b"]["mean"], v["a_below_b"]), ci_text(v["b_below_a"]["mean"], v["b_below_a"]),
                             ", ".join(v["heads"]) or "none"])
        md += [_table(["pair (a vs b)", "at", "overlap a", "overlap b", "difference a − b", "vulnerable: a < b − δ",
                       "baseline: b < a − δ", "vulnerable heads (seed-mean masks)"], rows), "",
               f"*Difference: Welch's t interval over seeds, then the seed bootstrap (each arm's seeds resampled) and the "
               f"exact permutation p of the seed labels; the masks are fitted once per model, so probe-pair noise is in "
               f"none of them. Vulnerable heads: heads of C0 ({n0}) whose mask under a is below b's by more than δ = {s['delta']}, "
               f"counted per seed (seed s of a against seed s of b), mean [95% interval]; the baseline counts the same "
               f"with the arms swapped: a count near its baseline is what two differently trained models give anyway. "
               f"At equal accuracy each measure and mask is interpolated between the checkpoints around the level with "
               f"CV's weights.*", ""]
        summary[cap] = {"overlap": {a: fin[a]["overlap"]["mean"] for a in arms},
                        "retention_change": {a: ret[a]["change"]["mean"] for a in arms},
                        "overlap_difference_side": {f"{a}-{b}": side for (a, b), (_, side) in zip(pairs, lines)}}
    return md, summary
