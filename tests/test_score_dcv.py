"""Stage `score-dcv` and the measures behind it, on synthetic circuits in the extract-circuits format."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

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


def test_base_circuit_is_the_smallest_faithful_top_k(tmp_path: Path):
    from dcv.scoring.measures import base_circuit

    synthetic.write(tmp_path)
    base = _load(tmp_path, "base")
    c0 = base_circuit(base, 0.8)
    assert c0.heads == ((1, 2), (0, 1)) and c0.reached and c0.faithfulness >= 0.8
    assert base_circuit(base, 0.9).heads == ((1, 2), (0, 1), (1, 0))
    capped = dataclasses.replace(base, base_f=[0.9 * f for f in base.base_f])  # tops out at 0.9
    unreachable = base_circuit(capped, 0.95)  # no k reaches it: the largest k, flagged
    assert not unreachable.reached and unreachable.k == 8


def test_preserved_fraction_ranks_the_model_as_c0_is_ranked(tmp_path: Path):
    """C0 holds the heads of largest |mean e|; a head whose per-pair effects are large but cancel (large mean |e|)
    must not push a C0 head out of the model's own top-|C0|."""
    import dataclasses

    from dcv.scoring.measures import base_circuit, score_model

    synthetic.write(tmp_path)
    base = _load(tmp_path, "base")
    c0 = base_circuit(base, 0.8)
    outside = next((l, h) for l in range(base.effects.shape[0]) for h in range(base.effects.shape[1])
                   if (l, h) not in c0.heads)
    abs_effects = base.abs_effects.copy()
    abs_effects[outside] = 100.0
    assert score_model(base, c0, dataclasses.replace(base, abs_effects=abs_effects)).preserved == 1.0


def test_a_model_against_itself_scores_zero(tmp_path: Path):
    from dcv.scoring.dcv import compare
    from dcv.scoring.measures import base_circuit, score_model

    synthetic.write(tmp_path)
    base, x = _load(tmp_path, "base"), _load(tmp_path, "sft/seed-0/step-6")
    c0 = base_circuit(base, 0.8)
    s = score_model(base, c0, base)
    assert s.cv == 0.0 and np.nanmax(np.abs(s.v)) == 0.0 and s.preserved == 1.0
    assert s.rank_correlation == pytest.approx(1.0) and s.faithfulness_retained == 1.0
    # DCV of the same models in both arms: 0, with a CI of exactly [0, 0] for a single model.
    res = compare({"ioi": base}, {"ioi": c0}, {"ioi": {"sft": [x], "rl": [x]}}, ("sft", "rl"), 200,
                  np.random.default_rng(0))
    v = res.summary["capabilities"]["ioi"]
    assert v["dcv"] == 0.0 and v["ci95"] == {"low": 0.0, "high": 0.0}
    assert all(h["dcv"] == 0.0 for h in v["heads"].values())


def test_zeroed_circuit_heads_have_vulnerability_one(tmp_path: Path):
    from dcv.scoring.circuits import load_circuit
    from dcv.scoring.measures import base_circuit, score_model

    synthetic.write(tmp_path)
    base = _load(tmp_path, "base")
    c0 = base_circuit(base, 0.8)
    rng = np.random.default_rng(1)
    f = tmp_path / "zeroed.json"
    f.write_text(json.dumps(synthetic.circuit("sft/seed-0/step-6", "ioi", 1.0, 16, rng, zero=list(c0.heads))))
    s = score_model(base, c0, load_circuit(f))
    for l, h in c0.heads:
        assert s.v[l, h] == pytest.approx(1.0)
    assert s.cv == pytest.approx(1.0) and s.preserved == 0.0
    assert np.isnan(s.v[0, 0])  # outside C0: not defined


def test_cv_tracks_degradation_and_weights_are_normalised_over_c0(tmp_path: Path):
    from dcv.scoring.measures import base_circuit, circuit_vulnerability

    synthetic.write(tmp_path)
    base = _load(tmp_path, "base")
    c0 = base_circuit(base, 0.8)
    m = c0.mask(base.shape)
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


def test_bootstrap_ci_excludes_zero_for_different_arms_and_covers_it_when_shuffled(tmp_path: Path):
    from dcv.scoring.dcv import compare, shuffled_ci
    from dcv.scoring.measures import base_circuit

    synthetic.write(tmp_path)
    bases = {c: _load(tmp_path, "base", c) for c in synthetic.CAPS}
    c0s = {c: base_circuit(b, 0.8) for c, b in bases.items()}
    runs = {c: {a: [_load(tmp_path, f"{a}/seed-{s}/step-6", c) for s in range(3)] for a in ("sft", "rl")}
            for c in synthetic.CAPS}
    res = compare(bases, c0s, runs, ("sft", "rl"), 500, np.random.default_rng(0))
    m = res.summary["mean"]
    assert m["dcv"] == pytest.approx(0.45, abs=0.1) and m["ci95"]["low"] > 0.2
    assert m["ci95"]["low"] <= m["dcv"] <= m["ci95"]["high"]
    sh = shuffled_ci(bases, c0s, runs, ("sft", "rl"), 500, np.random.default_rng(1))
    assert sh["covers_zero"] and sh["ci95"]["low"] < 0 < sh["ci95"]["high"]
    # Same draws, same numbers.
    again = compare(bases, c0s, runs, ("sft", "rl"), 500, np.random.default_rng(0))
    assert again.summary == res.summary


def test_nearest_checkpoint_and_levels():
    from dcv.scoring.dcv import accuracy_levels, nearest_checkpoint

    assert nearest_checkpoint({3: 0.6, 6: 0.9, 9: 0.95}, 0.92) == 6  # tie 0.9 / 0.95 -> the earlier step
    assert nearest_checkpoint({3: 0.6, 6: 0.9}, 0.0) == 3
    lv = accuracy_levels(0.25, {"sft": {3: 1.0, 6: 1.0}, "rl": {3: 0.4, 6: 0.55}})
    assert lv == pytest.approx([0.35, 0.45, 0.55])
    assert accuracy_levels(0.25, {"sft": {3: 1.0}, "rl": {3: 0.2}}) == [0.2]


def test_bad_circuits_file_names_file_and_key(tmp_path: Path):
    from dcv.errors import DcvError
    from dcv.scoring.circuits import load_circuit

    synthetic.write(tmp_path, seeds=(0,))
    f = tmp_path / "circuits/base/ioi.json"
    d = json.loads(f.read_text())
    d["effects"][0][0] += 1.0
    f.write_text(json.dumps(d))
    with pytest.raises(DcvError, match=r"ioi.json: effects: not the mean of effects_per_pair"):
        load_circuit(f)
    del d["effects_per_pair"]
    f.write_text(json.dumps(d))
    with pytest.raises(DcvError, match=r"ioi.json: effects_per_pair: missing"):
        load_circuit(f)


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
    _params(workdir, {"common": {"seeds": [0, 1, 2]}, "dcv": {"n_bootstrap": 200}})
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
    assert ioi["base_circuit"] == {"k": 2, "heads": ["L1H2", "L0H1"], "faithfulness": pytest.approx(0.82, abs=0.02),
                                   "reached": True}
    assert m["equal_steps"] == {"step": 6, "common_steps": [3, 6]}
    # Levels from the curves: RL's mean tops out at 0.59 (seeds 0.6, 0.59, 0.58), the base is at 0.25.
    lv = m["comparisons"]["sft-rl"]["equal_accuracy"]["levels"]
    assert [x["level"] for x in lv] == pytest.approx([0.3633, 0.4767, 0.59], abs=1e-3)
    assert lv[-1]["checkpoints"] == {"sft": {"0": 3, "1": 3, "2": 3}, "rl": {"0": 6, "1": 6, "2": 6}}
    assert ioi["equal_accuracy"]["level"] == lv[-1]["level"]
    # Cross-model effects: x_h = e0 (1 - scale), so the cross-model CV is about the degradation.
    assert ioi["cross_model_cv"]["sft"] == pytest.approx(ioi["cv"]["sft"], abs=0.1)
    s = m["sanity"]
    assert s["self"] == {"dcv": 0.0, "ci95": {"low": 0.0, "high": 0.0}} and s["base_cv"] == 0.0
    assert s["ablated_cv"] == 1.0 and s["ablated_v_min"] == 1.0 and s["shuffled_arms"]["covers_zero"]
    plots = workdir / "plots/dcv"
    assert sorted(p.name for p in plots.iterdir()) == ["by-step.csv", "dcv.csv", "heads"]
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
                                           "common": {"seeds": [0, 1]}})
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
