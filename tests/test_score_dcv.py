"""Stage `score-dcv` and the measures behind it, on synthetic circuits in the extract-circuits format."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dcv import io
from stages.cli import app
from tests import synthetic
from tests.conftest import write_params

TWO_ARMS = {"common": {"arms": ["sft", "rl"]}, "dcv": {"pairs": [["sft", "rl"]]}}


def _params(workdir: Path, edit: dict | None = None) -> None:
    from tests.conftest import deep_update

    write_params(workdir / "params.yaml", deep_update(json.loads(json.dumps(TWO_ARMS)), edit or {}))


def _load(root: Path, model: str, cap: str = "ioi"):
    from dcv.layout import Layout
    from dcv.scoring.circuits import load_circuit

    return load_circuit(Layout(root).circuit_file(model, cap))


def _stage(name: str = "score-dcv"):
    return CliRunner().invoke(app, ["stage", name])


# ------------------------------------------------------------------------------------------------ measures


def _c0(root: Path, cap: str = "ioi", target: float = 0.8):
    from dcv.scoring.measures import base_circuit

    return base_circuit(_load(root, "discovery/base", cap), target, _load(root, "base", cap))


def _runs(circuits: dict, seeds=None) -> dict:
    """capability -> arm -> [Run] from capability -> arm -> [Circuit]."""
    from dcv.scoring.dcv import Run

    return {c: {a: [Run.of(i, x) for i, x in enumerate(xs)] for a, xs in d.items()} for c, d in circuits.items()}


def _edit(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def test_base_circuit_is_the_smallest_faithful_top_k(tmp_path: Path):
    from dcv.scoring.measures import base_circuit

    synthetic.write(tmp_path)
    base = _load(tmp_path, "base")
    c0 = _c0(tmp_path)
    assert c0.heads == ((1, 2), (0, 1)) and c0.reached and c0.faithfulness >= 0.8
    assert c0.selection_split == "discovery" and c0.faithfulness_scoring == pytest.approx(base.base_f_at(2))
    assert _c0(tmp_path, target=0.9).heads == ((1, 2), (0, 1), (1, 0))
    capped = dataclasses.replace(base, base_f=[0.9 * f for f in base.base_f])  # tops out at 0.9
    unreachable = base_circuit(capped, 0.95)  # no k reaches it: the largest k, flagged
    assert not unreachable.reached and unreachable.k == 8
    assert c0.chance_preserved == 2 / 8 and not c0.majority and unreachable.majority


def test_c0_is_always_at_a_choosable_size(tmp_path: Path):
    """extract-circuits measures a fine-tuned model's discovery curve at `choosable_sizes` of the base's only: on
    curves that rise and fall, every target's C0 is at one of them, and they are fewer than all sizes."""
    import numpy as np

    from dcv.circuits.faithfulness import choosable_sizes
    from dcv.scoring.measures import base_circuit

    synthetic.write(tmp_path)
    base = _load(tmp_path, "base")
    rng = np.random.default_rng(0)
    for _ in range(20):
        f = [0.0, *np.round(np.cumsum(rng.normal(0.15, 0.3, len(base.base_k) - 1)), 3).tolist()]
        curve = dataclasses.replace(base, base_f=f)
        sizes = choosable_sizes(base.base_k, f)
        assert 0 in sizes and max(base.base_k) in sizes
        for target in np.linspace(0.01, 1.0, 34):
            assert base_circuit(curve, float(target)).k in sizes, (f, target)
    assert len(choosable_sizes(base.base_k, [0.0, 0.5, 0.4, 0.9, 0.3, 0.6, 1.0, 0.2, 0.95])) == 5  # 0, 1, 3, 6, 8


def test_c0_is_chosen_on_the_discovery_split_not_the_scoring_split(tmp_path: Path):
    """A discovery file whose ranking puts another head second: C0 follows it, and F(C0 | M) is read from every
    scoring file's `discovery_circuit` (the curve of that ranking on the scoring pairs)."""
    from dcv.scoring.circuits import check_discovery

    synthetic.write(tmp_path, seeds=(0,))
    order = [[1, 2], [1, 0], [0, 1]] + [[l, h] for l in range(2) for h in range(4) if [l, h] not in ([1, 2], [1, 0], [0, 1])]
    f_disc = [0.0, 0.5, 0.85, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0]
    _edit(tmp_path / "circuits/discovery/base/ioi.json",
          lambda d: d["base_circuit"].update(order=order, f=f_disc))
    with pytest.raises(Exception, match="discovery_circuit: missing or not the ranking"):
        check_discovery(_load(tmp_path, "discovery/base"), _load(tmp_path, "base"))
    for f in (tmp_path / "circuits").rglob("ioi.json"):
        if "discovery" not in f.parts:
            _edit(f, lambda d: d["discovery_circuit"].update(order=order, f=[0.0, 0.45, 0.7, 0.9, 1, 1, 1, 1, 1]))
    check_discovery(_load(tmp_path, "discovery/base"), _load(tmp_path, "base"))
    c0 = _c0(tmp_path)
    assert c0.heads == ((1, 2), (1, 0)) and c0.faithfulness == 0.85 and c0.faithfulness_scoring == 0.7


def test_preserved_fraction_and_rank_correlation_rank_by_the_mean_effect(tmp_path: Path):
    """C0 holds the heads of largest |mean e|; a head whose per-pair effects are large but cancel (large mean |e|)
    must neither push a C0 head out of the model's own top-|C0| nor move the rank correlation."""
    from dcv.scoring.measures import score_model

    synthetic.write(tmp_path)
    base = _load(tmp_path, "base")
    c0 = _c0(tmp_path)
    outside = next((l, h) for l in range(base.effects.shape[0]) for h in range(base.effects.shape[1])
                   if (l, h) not in c0.heads)
    abs_effects = base.abs_effects.copy()
    abs_effects[outside] = 100.0
    s = score_model(base, c0, dataclasses.replace(base, abs_effects=abs_effects))
    assert s.preserved == 1.0 and s.rank_correlation == pytest.approx(1.0)


def test_a_model_against_itself_scores_zero(tmp_path: Path):
    from dcv.scoring.dcv import compare
    from dcv.scoring.measures import score_model

    synthetic.write(tmp_path)
    base, x = _load(tmp_path, "base"), _load(tmp_path, "sft/seed-0/step-6")
    c0 = _c0(tmp_path)
    s = score_model(base, c0, base)
    assert s.cv == 0.0 and np.nanmax(np.abs(s.v)) == 0.0 and s.preserved == 1.0 and s.cross_model_cv == 0.0
    assert s.rank_correlation == pytest.approx(1.0) and s.faithfulness_retained == 1.0 and s.logit_diff_drop == 0.0
    # DCV of the same model in both arms: 0 with intervals of exactly [0, 0]. The pair draws are shared by both arms
    # (the crossed design); drawn apart, as for two separate probe sets, the bootstrap would spread around 0.
    res = compare({"ioi": base}, {"ioi": c0}, _runs({"ioi": {"sft": [x], "rl": [x]}}), ("sft", "rl"), 200,
                  np.random.default_rng(0))
    v = res.summary["capabilities"]["ioi"]
    assert v["dcv"] == 0.0 and v["ci95"] == {"low": 0.0, "high": 0.0} and v["ci95_bootstrap"] == {"low": 0.0, "high": 0.0}
    assert v["ci95_method"].startswith("pairs only") and all(h["dcv"] == 0.0 for h in v["heads"].values())


def test_zeroed_circuit_heads_have_vulnerability_one(tmp_path: Path):
    from dcv.scoring.circuits import load_circuit
    from dcv.scoring.measures import score_model

    synthetic.write(tmp_path)
    base = _load(tmp_path, "base")
    c0 = _c0(tmp_path)
    rng = np.random.default_rng(1)
    f = tmp_path / "zeroed.json"
    f.write_text(json.dumps(synthetic.circuit("sft/seed-0/step-6", "ioi", 1.0, 16, rng, zero=list(c0.heads))))
    s = score_model(base, c0, load_circuit(f))
    for l, h in c0.heads:
        assert s.v[l, h] == pytest.approx(1.0)
    assert s.cv == pytest.approx(1.0) and s.preserved == 0.0
    assert np.isnan(s.v[0, 0])  # outside C0: not defined


def test_cv_tracks_degradation_and_weights_are_normalised_over_c0(tmp_path: Path):
    from dcv.scoring.measures import circuit_vulnerability

    synthetic.write(tmp_path)
    base = _load(tmp_path, "base")
    m = _c0(tmp_path).mask(base.shape)
    # Halving every effect gives CV 0.5; doubling gives -1 (the heads now work harder for the answer).
    assert circuit_vulnerability(base.effects, 0.5 * base.effects, m) == pytest.approx(0.5)
    assert circuit_vulnerability(base.effects, 2.0 * base.effects, m) == pytest.approx(-1.0)
    x = _load(tmp_path, "sft/seed-0/step-6")
    assert float(circuit_vulnerability(base.effects, x.effects, m)) == pytest.approx(0.6, abs=0.1)


def test_spearman_with_ties():
    from dcv.scoring.measures import spearman

    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)
    # scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]) = 0.9486832980505138
    assert spearman(np.array([1, 2, 2, 3.0]), np.array([1, 3, 2, 4.0])) == pytest.approx(0.9486832980505138)


# ------------------------------------------------------------------------------------------------ guards


def test_a_c0_head_with_base_effect_near_zero_gets_no_ratio(tmp_path: Path):
    """A C0 head whose base effect on the scoring pairs is tiny (or within its standard error): flagged, v_h and the
    cross-model ratio undefined there; CV stays finite (the head's weight is as small as its effect)."""
    from dcv.scoring.measures import score_model

    synthetic.write(tmp_path, seeds=(0,))
    f = tmp_path / "circuits/base/ioi.json"

    def shrink(d):
        pp = np.array(d["effects_per_pair"])
        pp[:, 0, 1] = pp[:, 0, 1] - pp[:, 0, 1].mean() + 0.004  # mean 0.004, per-pair spread unchanged
        d["effects_per_pair"] = pp.tolist()
        d["effects"] = pp.mean(0).tolist()
    _edit(f, shrink)
    c0 = _c0(tmp_path)
    assert (0, 1) in c0.heads and set(c0.unstable[(0, 1)]) >= {"small", "noisy", "sign"} and (1, 2) not in c0.unstable
    base, x = _load(tmp_path, "base"), _load(tmp_path, "sft/seed-0/step-6")
    s = score_model(base, c0, x)
    assert np.isnan(s.v[0, 1]) and np.isfinite(s.v[1, 2]) and np.isnan(s.cross_model[0, 1])
    assert np.isfinite(s.cv) and np.isfinite(s.cross_model_cv)
    # Unguarded, the ratio would be 1 - ex / e0 with e0 = 0.004: far outside [0, 1].
    assert abs(1 - x.effects[0, 1] / base.effects[0, 1]) > 10


def test_faithfulness_retained_is_undefined_when_the_model_lost_the_signal(tmp_path: Path):
    """m(Mx) - m_empty(Mx) near 0 (the capability is gone): F(C0 | Mx) divides by ~0, so faithfulness retained is NaN
    rather than a ratio of noise; a seed with it NaN is left out of the mean and counted."""
    from dcv.scoring.dcv import compare
    from dcv.scoring.measures import score_model

    synthetic.write(tmp_path)
    f = tmp_path / "circuits/sft/seed-1/step-6/ioi.json"
    _edit(f, lambda d: d["metric"].update(clean=0.1005, empty=0.1))  # signal 5e-4, the base's 2.9
    base, c0 = _load(tmp_path, "base"), _load(tmp_path, "sft/seed-1/step-6")
    assert np.isnan(score_model(base, _c0(tmp_path), c0).faithfulness_retained)
    runs = {"ioi": {a: [_load(tmp_path, f"{a}/seed-{s}/step-6") for s in range(3)] for a in ("sft", "rl")}}
    v = compare({"ioi": base}, {"ioi": _c0(tmp_path)}, _runs(runs), ("sft", "rl"), 100,
                np.random.default_rng(0)).summary["capabilities"]["ioi"]
    ok = [score_model(base, _c0(tmp_path), runs["ioi"]["sft"][s]).faithfulness_retained for s in (0, 2)]
    assert v["faithfulness_retained"]["sft"] == pytest.approx(np.mean(ok))
    assert v["undefined"] == {"faithfulness_retained": {"sft": 1, "rl": 0}}


# ------------------------------------------------------------------------------------------------ intervals, tests


def _three_seeds(tmp_path: Path, **kw):
    synthetic.write(tmp_path, **kw)
    bases = {c: _load(tmp_path, "base", c) for c in synthetic.CAPS}
    c0s = {c: _c0(tmp_path, c) for c in synthetic.CAPS}
    runs = {c: {a: [_load(tmp_path, f"{a}/seed-{s}/step-6", c) for s in range(3)] for a in ("sft", "rl")}
            for c in synthetic.CAPS}
    return bases, c0s, runs


def test_intervals_of_different_arms(tmp_path: Path):
    from dcv.scoring.dcv import compare

    bases, c0s, runs = _three_seeds(tmp_path)
    res = compare(bases, c0s, _runs(runs), ("sft", "rl"), 500, np.random.default_rng(0))
    m = res.summary["mean"]
    assert m["dcv"] == pytest.approx(0.45, abs=0.1) and m["ci95"]["low"] > 0.2
    assert m["ci95"]["low"] <= m["dcv"] <= m["ci95"]["high"] and m["ci95_method"] == "t: seeds and probe pairs"
    for key in ("ci95_bootstrap", "ci95_seeds"):
        assert m[key]["low"] <= m["dcv"] <= m[key]["high"]
    assert set(m["per_seed"]["sft"]) == {"0", "1", "2"}
    assert m["dcv_by_seed"]["1"] == pytest.approx(m["per_seed"]["sft"]["1"] - m["per_seed"]["rl"]["1"])
    assert np.mean(list(m["per_seed"]["sft"].values())) == pytest.approx(m["cv"]["sft"])
    # 3 seeds against 3: the exact permutation over seeds cannot go below 2 / C(6, 3).
    assert m["permutation"]["exact"] and m["permutation"]["min_p"] == pytest.approx(0.1) and m["permutation"]["p"] == 0.1
    again = compare(bases, c0s, _runs(runs), ("sft", "rl"), 500, np.random.default_rng(0))
    assert again.summary == res.summary  # same draws, same numbers


def test_label_permutation_rejects_a_known_difference_and_not_exchangeable_models(tmp_path: Path):
    """The base against itself with its C0 heads zeroed: rejected. Two models drawn alike (the same degradation,
    independent pair noise): not rejected. Two arms whose degradations differ: rejected."""
    from dcv.scoring.dcv import pair_permutation
    from stages.score_dcv import _ablated

    bases, c0s, _ = _three_seeds(tmp_path)
    rng = np.random.default_rng(0)
    zeroed = {c: _ablated(b, c0s[c].mask(b.shape)) for c, b in bases.items()}
    assert pair_permutation(bases, c0s, zeroed, bases, rng, 999)["p"] < 0.01

    def model(cap, scale, r):
        f = tmp_path / f"m-{cap}-{scale}-{r}.json"
        f.write_text(json.dumps(synthetic.circuit("x/seed-0/step-1", cap, scale, 16, np.random.default_rng(r))))
        from dcv.scoring.circuits import load_circuit

        return load_circuit(f)

    same = pair_permutation(bases, c0s, {c: model(c, 0.6, 1) for c in bases}, {c: model(c, 0.6, 2) for c in bases},
                            rng, 999)
    assert same["p"] > 0.05
    diff = pair_permutation(bases, c0s, {c: model(c, 0.4, 1) for c in bases}, {c: model(c, 0.85, 2) for c in bases},
                            rng, 999)
    assert diff["p"] < 0.01 and diff["stat"] == pytest.approx(0.45, abs=0.1)


def test_bracket_interpolates_and_says_how_far_it_reaches():
    from dcv.scoring.dcv import accuracy_levels, bracket

    curve = {0: 0.25, 100: 0.70, 200: 1.0}
    b = bracket(curve, 0.9)
    assert b["steps"] == [100, 200] and b["terms"] == [(100, pytest.approx(1 / 3)), (200, pytest.approx(2 / 3))]
    assert b["gap"] == pytest.approx(0.1)  # the nearer measured checkpoint is 0.1 away
    assert bracket(curve, 0.7)["terms"] == [(100, 1.0)] and bracket(curve, 0.7)["gap"] == 0.0
    assert bracket(curve, 0.4)["steps"] == [0, 100]  # from the base
    assert bracket({0: 0.25, 50: 0.6, 100: 0.5}, 0.55)["steps"] == [0, 50]  # the first time it gets there
    assert bracket(curve, 1.01) is None and bracket(curve, 0.2) is None  # outside the seed's range
    lv = accuracy_levels(0.25, {"sft": {0: {3: 1.0, 6: 1.0}}, "rl": {0: {3: 0.4, 6: 0.55}, 1: {3: 0.5}}})
    assert lv == pytest.approx([0.3333, 0.4167, 0.5], abs=1e-4)  # up to the lowest top of any seed
    assert accuracy_levels(0.25, {"sft": {0: {3: 1.0}}, "rl": {0: {3: 0.2}}}) == []


# ------------------------------------------------------------------------------------------------ predictors


def test_predictor_table_with_clustered_intervals():
    """Forgetting = 2 CV within each arm plus run-level noise; the logit-difference drop is CV plus noise: CV's R²
    is near 1 pooled, within each arm and with the arm fixed effect, and it beats the drop."""
    from dcv.scoring.predictors import analyse

    rng = np.random.default_rng(0)
    pts = []
    for arm, off in (("sft", 0.2), ("rl", 0.0)):
        for seed in range(4):
            for step in (1, 2, 3, 4):
                cv = 0.1 * step + rng.normal(0, 0.02)
                pts.append({"model": f"{arm}/seed-{seed}/step-{step}", "arm": arm, "seed": seed, "step": step,
                            "forgetting": off + 2 * cv + rng.normal(0, 0.005), "cv": cv,
                            "logit_diff_drop": cv + rng.normal(0, 0.08), "forward_kl": rng.normal(1, 0.1),
                            "param_distance": None})
    t = analyse({"model": pts}, ["sft", "rl"], 300, np.random.default_rng(1))["model"]
    assert t["n_points"] == 32 and t["n_runs"] == 8 and t["runs_per_arm"] == {"sft": 4, "rl": 4}
    cv = t["predictors"]["cv"]
    assert cv["arm_fe"]["r2"] > 0.95 and cv["within"]["sft"]["r2"] > 0.95 and cv["pooled"]["r2"] > 0.5
    assert cv["arm_fe"]["ci95"]["low"] > 0.9 and cv["arm_fe"]["slope"] == pytest.approx(2.0, abs=0.1)
    assert t["cv_vs_logit_diff_drop"]["arm_fe"]["verdict"] == "beats"
    assert t["predictors"]["forward_kl"]["arm_fe"]["r2"] < 0.3
    assert t["predictors"]["param_distance"]["pooled"]["n"] == 0 and np.isnan(t["predictors"]["param_distance"]["pooled"]["r2"])


# ------------------------------------------------------------------------------------------------ the stage


def _mlflow_run(workdir: Path, stage: str):
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dcv-test")
    (run,) = client.search_runs([exp.experiment_id], f"tags.`dcv.stage` = '{stage}'", order_by=["start_time DESC"],
                                max_results=1)
    return client, run


def test_stage_writes_metrics_plots_and_mlflow_and_is_deterministic(workdir: Path):
    synthetic.write(workdir)
    _params(workdir, {"common": {"seeds": [0, 1, 2]}, "dcv": {"n_bootstrap": 200, "accuracy_tolerance": 0.35}})
    r = _stage()
    assert r.exit_code == 0, r.output
    m = json.loads((workdir / "metrics/score-dcv.json").read_text())
    assert set(m["capabilities"]) == set(synthetic.CAPS)
    ioi = m["capabilities"]["ioi"]
    for key in ("dcv", "ci95", "cv", "preserved", "faithfulness_retained", "rank_correlation", "cross_model_cv",
                "equal_accuracy", "heads", "base_circuit"):
        assert key in ioi, key
    assert set(ioi["cv"]) == {"sft", "rl"} and ioi["dcv"] == pytest.approx(ioi["cv"]["sft"] - ioi["cv"]["rl"])
    assert ioi["ci95"]["low"] > 0 and m["mean"]["ci95"]["low"] > 0
    bc = ioi["base_circuit"]
    assert (bc["k"], bc["heads"], bc["reached"], bc["selection_split"]) == (2, ["L1H2", "L0H1"], True, "discovery")
    assert bc["faithfulness"] == pytest.approx(0.82, abs=0.02) and bc["unstable"] == {}
    assert m["equal_steps"] == {"step": 6, "common_steps": [3, 6], "by_pair": {"sft-rl": {"step": 6, "common_steps": [3, 6]}}}
    # Levels from the curves: the lowest top of any seed is RL seed 2's 0.58, the base is at 0.25. SFT jumps from
    # the base to 0.99-1.0 at step 3, so every level interpolates SFT between step 0 and step 3.
    ea = m["comparisons"]["sft-rl"]["equal_accuracy"]
    lv = ea["levels"]
    assert [x["level"] for x in lv] == pytest.approx([0.36, 0.47, 0.58], abs=1e-3) and ea["skipped"] == []
    top = lv[-1]
    assert top["checkpoints"]["rl"]["2"] == [[6, 1.0]] and [st for st, _ in top["checkpoints"]["sft"]["0"]] == [0, 3]
    assert top["gap"] == pytest.approx(0.33, abs=1e-3) and top["largest_gap"]["arm"] == "sft"
    assert top["within_tolerance"] and ea["headline_level"] == top["level"] == ioi["equal_accuracy"]["level"]
    assert top["target_accuracy"] == {"sft": pytest.approx(0.58), "rl": pytest.approx(0.58)}
    assert ioi["equal_accuracy"]["gap"] == top["gap"]
    # Forgetting interpolated alike: synthetic forgetting is dg / 2, linear in the step, so at 0.58 SFT's is a share
    # of its step-3 value and RL's lies between its step-3 and step-6 values.
    assert 0 < top["forgetting"]["sft"]["mean"] < 0.3 / 2 + 0.03
    # Cross-model effects: x_h = e0 (1 - scale), so the cross-model CV is about the degradation.
    assert ioi["cross_model_cv"]["sft"] == pytest.approx(ioi["cv"]["sft"], abs=0.1)
    s = m["sanity"]
    assert s["self"]["passed"] and s["self"]["dcv"] == 0.0 and s["base_cv"] == 0.0
    assert s["ablated_cv"] == 1.0 and s["ablated_v_min"] == 1.0
    assert s["zeroed_vs_base"]["passed"] and s["zeroed_vs_base"]["p"] < 0.05
    assert s["same_arm_seeds"]["passed"] and not s["same_arm_seeds"]["rejected"]
    assert m["base_circuits"]["ioi"]["base_circuit"]["preserved_chance"] == 0.25
    pr = m["predictors"]["model"]
    assert pr["n_points"] == 2 * 3 * 2 and pr["n_runs"] == 6 and set(pr["predictors"]) == {
        "cv", "logit_diff_drop", "forward_kl", "param_distance"}
    assert len(m["checkpoints"]) == 12 and {"cv", "forgetting", "target_accuracy", "prior_accuracy", "param_distance"} <= set(m["checkpoints"][0])
    plots = workdir / "plots/dcv"
    assert sorted(p.name for p in plots.iterdir()) == ["by-step.csv", "dcv.csv", "heads", "study.csv"]
    # The study's measures on the synthetic DBM masks (synthetic.study_mask): SFT's last step drops L0H0 and L1H0
    # from C0 in every seed (overlap 0.5), RL's none; SFT still holds all four at step 3.
    st = m["study"]["capabilities"]["target"]
    assert m["study"]["delta"] == 0.2 and st["base"] == {"size": 4, "n_heads": 8}
    sft, rl = st["arms"]["sft"], st["arms"]["rl"]
    assert [r["step"] for r in sft["by_step"]] == [0, 3, 6] and sft["start"] == ["base"]
    assert sft["by_step"][0]["overlap"]["mean"] == 1.0 and sft["by_step"][0]["mask_shift"]["mean"] == 0.0
    assert sft["by_step"][-1]["overlap"]["seeds"] == [0.5, 0.5, 0.5] and rl["by_step"][-1]["overlap"]["mean"] == 1.0
    assert sft["by_step"][-1]["size"]["mean"] == 2.0 and sft["by_step"][-1]["mask_shift_c0"]["mean"] < 0
    assert (sft["retention"]["first_step"], sft["retention"]["last_step"]) == (3, 6)
    assert sft["retention"]["change"]["mean"] == -0.5 and rl["retention"]["change"]["mean"] == 0.0
    pair = st["pairs"]["sft-rl"]
    eq = pair["equal_steps"]
    assert eq["step"] == 6 and eq["difference"]["overlap"]["diff"] == pytest.approx(-0.5)
    assert eq["arms"]["sft"]["overlap"]["mean"] == 0.5
    assert eq["vulnerable"]["a_below_b"]["mean"] >= 2 and eq["vulnerable"]["b_below_a"]["mean"] == 0.0
    assert {"L0H0", "L1H0"} <= set(eq["vulnerable"]["heads"]) and eq["vulnerable"]["heads_b_below_a"] == []
    ea_study = pair["equal_accuracy"]
    assert ea_study["level"] == ea["headline_level"] and ea_study["gap"] == top["gap"]
    # at 0.58 SFT is read between step 0 and step 3, where no C0 head has left yet
    assert ea_study["arms"]["sft"]["overlap"]["mean"] == 1.0
    rows = (plots / "study.csv").read_text().splitlines()
    assert rows[0] == "capability,arm,step,measure,mean,low,high,n" and len(rows) == 1 + 2 * 3 * 5
    heads = json.loads((plots / "heads/sft-rl/ioi.json").read_text())
    assert heads["v"]["sft"][0][0] is None and heads["v"]["sft"][1][2] == pytest.approx(ioi["heads"]["L1H2"]["v"]["sft"])
    from dcv.scoring.scores import CircuitScore
    from dcv.tables import read_table

    scores = read_table(workdir / "measurements/circuits.csv", CircuitScore)
    assert len(scores) == 2 * 3 * 2 * 2  # arms x seeds x steps x capabilities
    assert m["comparisons"]["sft-rl"]["capabilities"]["ioi"]["dcv"] == ioi["dcv"]
    # MLflow: the same values as the metrics file, and the plot data as artifacts.
    client, run = _mlflow_run(workdir, "score-dcv")
    assert run.data.metrics["capabilities.ioi.dcv"] == ioi["dcv"]
    assert run.data.metrics["mean.ci95.low"] == m["mean"]["ci95"]["low"]
    assert run.data.params["dcv.faithfulness_target"] == "0.8"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} >= {"plots/dcv.csv", "plots/heads"}
    # Rerun: identical bytes (wall_s aside).
    before = {p: p.read_bytes() for p in sorted(plots.rglob("*")) if p.is_file()}
    assert _stage().exit_code == 0
    assert before == {p: p.read_bytes() for p in sorted(plots.rglob("*")) if p.is_file()}
    m2 = json.loads((workdir / "metrics/score-dcv.json").read_text())
    m.pop("wall_s"), m2.pop("wall_s")
    assert m == m2


def test_stage_same_models_in_both_arms_give_dcv_zero(workdir: Path):
    synthetic.write(workdir, seeds=(0,), same_arms=True)
    _params(workdir, {"dcv": {"n_bootstrap": 100}})
    assert _stage().exit_code == 0
    m = json.loads((workdir / "metrics/score-dcv.json").read_text())
    assert m["mean"]["dcv"] == 0.0 and m["mean"]["ci95"] == {"low": 0.0, "high": 0.0}
    assert all(v["dcv"] == 0.0 for v in m["capabilities"].values())
    assert m["sanity"]["same_arm_seeds"] == {"skipped": "one seed"}


def test_faithfulness_target_changes_the_base_circuit(workdir: Path):
    synthetic.write(workdir, seeds=(0,))
    _params(workdir, {"dcv": {"n_bootstrap": 50, "faithfulness_target": 0.9}})
    assert _stage().exit_code == 0
    m = json.loads((workdir / "metrics/score-dcv.json").read_text())
    assert m["capabilities"]["ioi"]["base_circuit"]["k"] == 3 and m["faithfulness_target"] == 0.9


@pytest.mark.parametrize("override,needle", [
    ({"dcv": {"faithfulness_target": 1.5}}, "params.yaml: dcv.faithfulness_target: Input should be less than or equal to 1"),
    ({"dcv": {"accuracy_levels": [0.5, 0.5]}}, "params.yaml: dcv.accuracy_levels: must be a non-empty list"),
    ({"dcv": {"n_boot": 3}}, "params.yaml: dcv.n_boot: unknown key"),
])
def test_bad_params_stop_with_one_line(workdir: Path, override, needle):
    synthetic.write(workdir, seeds=(0,))
    _params(workdir, override)
    r = _stage()
    assert r.exit_code == 2 and needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (workdir / "metrics/score-dcv.json").exists() and not (workdir / "mlflow.db").exists()


def test_every_pair_of_arms_is_scored_and_the_first_is_the_headline(workdir: Path):
    synthetic.write(workdir, seeds=(0, 1), degrade={"sft": 0.6, "rl": 0.15, "protect": 0.3})
    write_params(workdir / "params.yaml", {"dcv": {"n_bootstrap": 100, "pairs": [["rl", "sft"], ["sft", "protect"]]},
                                           "common": {"seeds": [0, 1], "arms": ["sft", "rl", "protect"]}})
    assert _stage().exit_code == 0
    m = json.loads((workdir / "metrics/score-dcv.json").read_text())
    assert m["headline"] == "rl-sft" and set(m["comparisons"]) == {"rl-sft", "sft-protect"}
    assert m["mean"]["dcv"] == m["comparisons"]["rl-sft"]["mean"]["dcv"] < 0  # RL degrades less: DCV(rl, sft) < 0
    sp = m["comparisons"]["sft-protect"]["mean"]
    assert sp["dcv"] == pytest.approx(sp["cv"]["sft"] - sp["cv"]["protect"]) and sp["dcv"] > 0
    assert (workdir / "plots/dcv/heads/sft-protect/ioi.json").is_file()
    _params(workdir, {"dcv": {"pairs": [["sft", "protect"]]}})  # protect is not among common.arms
    r = _stage()
    assert r.exit_code == 2 and "dcv.pairs: ['sft', 'protect'] names ['protect'], not in common.arms" in r.output


def test_missing_circuits_stop_before_anything_is_written(workdir: Path):
    synthetic.write(workdir, seeds=(0,))
    _params(workdir, {"common": {"seeds": [0, 1]}})
    r = _stage()
    assert r.exit_code == 2 and "circuits/sft/seed-1: no circuits" in r.output, r.output
    assert not (workdir / "plots").exists() and not (workdir / "mlflow.db").exists()


def test_equal_accuracy_beyond_the_tolerance_is_printed_with_its_gap_but_is_no_headline(workdir: Path):
    """SFT jumps from the base (0.25) to 1.0 at its first checkpoint: no level has every seed within 0.05 of a
    measured checkpoint, so there is no equal-accuracy headline; every level is still listed with its gap. A level
    above RL's reach is not reported at all."""
    synthetic.write(workdir, seeds=(0, 1))
    _params(workdir, {"common": {"seeds": [0, 1]}, "dcv": {"n_bootstrap": 50, "accuracy_levels": [0.5, 0.95]}})
    assert _stage().exit_code == 0
    m = json.loads((workdir / "metrics/score-dcv.json").read_text())
    ea = m["comparisons"]["sft-rl"]["equal_accuracy"]
    assert ea["headline_level"] is None and m["mean"]["equal_accuracy"] is None
    assert m["capabilities"]["ioi"]["equal_accuracy"] is None
    (lv,) = ea["levels"]
    assert lv["level"] == 0.5 and not lv["within_tolerance"] and lv["gap"] > 0.05
    assert ea["skipped"] == [{"level": 0.95, "reason": "outside the target-accuracy range of rl seed 0, rl seed 1"}]
    rows = (workdir / "plots/dcv/dcv.csv").read_text().splitlines()
    assert rows[0] == "pair,comparison,capability,dcv,low,high,gap" and not any(",equal-accuracy," in r for r in rows)


def test_seeds_with_different_step_sets(workdir: Path):
    """Seed 1 of SFT has an extra checkpoint (step 9): equal steps use the last step every arm and seed has (6);
    at equal accuracy each seed is bracketed on its own curve."""
    synthetic.write(workdir, seeds=(0, 1))
    from dcv.measurements import Measurement, MeasurementTable

    rng = np.random.default_rng(5)
    t = MeasurementTable.read(workdir / "measurements/models.csv")
    extra = "sft/seed-1/step-9"
    for c in synthetic.CAPS:
        (workdir / f"circuits/{extra}").mkdir(parents=True, exist_ok=True)
        (workdir / f"circuits/{extra}/{c}.json").write_text(json.dumps(synthetic.circuit(extra, c, 0.2, 16, rng)))
    io.write_json(workdir / f"circuits/{extra}/study/{synthetic.STUDY_CAP}.json", synthetic.study_mask(0.8))
    rows = t.rows + [Measurement(extra, "sft", 1, 9, True, c, 0.5, 0.6, 1.0, 0.5, 1.0, 1.0, 9.0) for c in synthetic.CAPS]
    MeasurementTable(rows).write(workdir / "measurements/models.csv")
    _params(workdir, {"common": {"seeds": [0, 1]}, "dcv": {"n_bootstrap": 50, "accuracy_tolerance": 0.5}})
    r = _stage()
    assert r.exit_code == 0, r.output
    m = json.loads((workdir / "metrics/score-dcv.json").read_text())
    assert m["equal_steps"] == {"step": 6, "common_steps": [3, 6], "by_pair": {"sft-rl": {"step": 6, "common_steps": [3, 6]}}}
    steps = {(p["arm"], p["seed"], p["step"]) for p in m["checkpoints"]}
    assert ("sft", 1, 9) in steps and ("sft", 0, 9) not in steps


def test_same_arm_seeds_check_can_fail(workdir: Path):
    """Two seeds of SFT far apart while every other run agrees with its arm: the pooled seed variance is small, so
    comparing the two SFT seeds as arms rejects and the check says it failed."""
    synthetic.write(workdir, seeds=(0, 1, 2), degrade={"sft": 0.6, "rl": 0.15})
    rng = np.random.default_rng(3)
    for c in synthetic.CAPS:  # SFT seed 1 at the final step: barely degraded
        mid = "sft/seed-1/step-6"
        (workdir / f"circuits/{mid}/{c}.json").write_text(json.dumps(synthetic.circuit(mid, c, 0.98, 16, rng)))
    _params(workdir, {"common": {"seeds": [0, 1, 2]}, "dcv": {"n_bootstrap": 100}})
    assert _stage().exit_code == 0
    s = json.loads((workdir / "metrics/score-dcv.json").read_text())["sanity"]["same_arm_seeds"]
    assert s["rejected"] and not s["passed"] and s["pairs_only_permutation"]["rejected"]


def test_missing_discovery_circuits_stop_with_one_line(workdir: Path):
    synthetic.write(workdir, seeds=(0,))
    (workdir / "circuits/discovery/base/ioi.json").unlink()
    _params(workdir)
    r = _stage()
    assert r.exit_code == 2 and "circuits/discovery/base/ioi.json: not found" in r.output, r.output


def test_real_circuits_choose_c0_on_discovery_and_score_on_the_scoring_split(workdir: Path):
    """The real chain on the tiny world: extract-circuits measures the base on the discovery and the scoring split
    and every checkpoint on the scoring split; score-dcv chooses C0 from the discovery file; forgetting is measured
    on the forgetting split, whose pairs the circuits never saw."""
    from dcv.probes import load_probes

    _params(workdir, {"circuits": {"batch_size": 8, "heads_per_forward": 8, "validate": False},
                      "dcv": {"n_bootstrap": 50}})
    synthetic.tiny_project(workdir, seeds=(0,))
    for name in ("extract-circuits", "evaluate-forgetting", "score-dcv"):
        r = _stage(name)
        assert r.exit_code == 0, r.output
    disc, base = (json.loads((workdir / f"circuits/{m}/ioi.json").read_text()) for m in ("discovery/base", "base"))
    assert (disc["split"], base["split"]) == ("discovery", "probes") and disc["model"] == "discovery/base"
    x = json.loads((workdir / "circuits/sft/seed-0/step-6/ioi.json").read_text())
    assert x["discovery_circuit"]["order"] == base["discovery_circuit"]["order"] == disc["faithfulness"]["order"]
    assert json.loads((workdir / "circuits/index.json").read_text())["discovery"] == "discovery/base"
    m = json.loads((workdir / "metrics/score-dcv.json").read_text())
    bc = m["base_circuits"]["ioi"]["base_circuit"]
    assert bc["selection_split"] == "discovery" and bc["heads"] == [f"L{l}H{h}" for l, h in disc["faithfulness"]["order"][:bc["k"]]]
    splits = {s: {(r["clean"], r["corrupt"]) for r in load_probes(workdir / f"data/prepared/{s}/ioi.jsonl")}
              for s in ("discovery", "probes", "forgetting")}
    assert not splits["discovery"] & splits["probes"] and not splits["probes"] & splits["forgetting"]
    prep = json.loads((workdir / "metrics/prepare-data.json").read_text())
    assert set(prep["clean_overlap"]["ioi"]) == {"discovery/probes", "probes/forgetting", "discovery/forgetting"}


def test_an_arm_that_continues_another_starts_from_that_checkpoint(workdir: Path, monkeypatch):
    """rl_sft continues sft's step 3 (its rows' `init`): its step 0 is that checkpoint in the measurement table (target
    accuracy, forgetting) and in score-dcv (its circuits); each pair compares at its own last common step; without
    the start's rows the table says so."""
    from dcv.errors import DcvError
    from dcv.layout import Layout
    from dcv.measurements import MeasurementTable

    monkeypatch.chdir(workdir)
    _params(workdir, {"common": {"arms": ["sft", "rl", "rl_sft"]},
                      "dcv": {"pairs": [["sft", "rl"], ["sft", "rl_sft"]], "n_bootstrap": 50}})
    synthetic.write(workdir, seeds=(0, 1), degrade={"sft": 0.6, "rl": 0.15, "rl_sft": 0.3},
                    starts={"rl_sft": ("sft", 3)})
    t = MeasurementTable.read(Layout(workdir).measurements)
    assert t.start("rl_sft", 1) == "sft/seed-1/step-3" and t.start("sft", 1) == "base"
    assert t.checkpoint("rl_sft", 1, 0) == "sft/seed-1/step-3"
    assert t.target_curve("rl_sft", 1)[0] == t.first("sft/seed-1/step-3").target_accuracy != t.target_curve("sft", 1)[0]
    from stages.score_dcv import _forgetting, _model, load_inputs

    inp = load_inputs(Layout(workdir), ["sft", "rl", "rl_sft"], [0, 1])
    assert _model(inp, "rl_sft", 1, 0, "ioi") is inp.circuits[("sft", 1, 3)]["ioi"]
    assert _model(inp, "sft", 1, 0, "ioi") is inp.bases["ioi"]
    assert _forgetting(inp, "rl_sft", 1, 0) == t.forgetting("sft/seed-1/step-3") != _forgetting(inp, "sft", 1, 0)
    r = _stage()
    assert r.exit_code == 0, r.output
    m = json.loads((workdir / "metrics/score-dcv.json").read_text())
    assert m["equal_steps"]["by_pair"] == {"sft-rl": {"step": 6, "common_steps": [3, 6]},
                                           "sft-rl_sft": {"step": 6, "common_steps": [3, 6]}}
    seeds = m["comparisons"]["sft-rl_sft"]["equal_accuracy"]["levels"]
    for lv in seeds:  # rl_sft's steps 0 are sft's step 3, never the base's accuracy
        for s, terms in lv["checkpoints"]["rl_sft"].items():
            assert all(st in (0, 3, 6) for st, _ in terms)
    rows = (workdir / "plots/dcv/by-step.csv").read_text().splitlines()
    assert sum(r.startswith("rl_sft,") for r in rows) == 2
    # the study's measures too: rl_sft's step 0 is the mask of sft's step 3 of the same seed
    from dcv.scoring.study import measures
    st = m["study"]["capabilities"]["target"]["arms"]["rl_sft"]
    assert st["start"] == ["sft/seed-0/step-3"]  # the stage scores the params' seeds: [0]
    assert st["by_step"][0]["overlap"]["seeds"] == [
        measures(inp.study["target"]["base"], inp.study["target"][("sft", 0, 3)]).overlap]

    bad = [dataclasses.replace(r, init="sft/seed-1/step-9") if r.arm == "rl_sft" else r for r in t.rows]
    with pytest.raises(DcvError, match="no rows of model sft/seed-1/step-9"):
        MeasurementTable(bad).start("rl_sft", 1)
