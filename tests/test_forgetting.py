"""Stage `evaluate-forgetting` and its measures; the optional lm-evaluation-harness bridge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stages.cli import app
from tests import synthetic
from tests.conftest import REPO, write_params

TWO_ARMS = {"common": {"arms": ["sft", "rl"]}, "dcv": {"pairs": [["sft", "rl"]]}}


def _table(rows):
    from dcv.measurements import Measurement, MeasurementTable

    return MeasurementTable([Measurement(*r) for r in rows])


def test_forgetting_and_adaptation_step():
    from dcv.forgetting import adaptation_step

    t = _table([("base", "base", None, 0, False, "a", 1.0, 1.0, 0.2, 0.3, 0.0, 0.0),
                ("base", "base", None, 0, False, "b", 0.8, 1.0, 0.2, 0.3, 0.0, 0.0),
                ("x/seed-0/step-5", "x", 0, 5, True, "a", 0.5, 1.0, 0.9, 0.3, 1.0, 1.0),
                ("x/seed-0/step-5", "x", 0, 5, True, "b", 0.9, 1.0, 0.9, 0.3, 1.0, 1.0)])
    f = t.forgetting("x/seed-0/step-5")
    assert f == {"mean": pytest.approx(0.2), "a": 0.5, "b": pytest.approx(-0.1)}
    assert t.target_curve("x", 0) == {0: 0.2, 5: 0.9}
    curve = [(0, 0.2), (10, 0.3), (20, 0.7), (30, 0.9), (40, 1.0)]
    assert adaptation_step(curve, 0.9) == 40  # threshold 0.2 + 0.9 * 0.8 = 0.92
    assert adaptation_step(curve, 0.5) == 20
    assert adaptation_step([(0, 0.5), (10, 0.4), (20, 0.5)], 0.9) is None  # no gain over the base


def test_summarize_means_spread_and_per_capability():
    """Seeds aligned by step, not by list position (seed 1 has an extra checkpoint), sample SD over seeds."""
    from dcv.forgetting import summarize

    def rows(mid, arm, seed, step, t, a, kl):
        return [(mid, arm, seed, step, False, "x", a, 2 * a, t, 0.3, kl, kl)]

    t = _table(rows("base", "base", None, 0, 0.25, 1.0, 0.0)
               + rows("sft/seed-0/step-5", "sft", 0, 5, 0.9, 0.6, 2.0) + rows("sft/seed-0/step-10", "sft", 0, 10, 1.0, 0.5, 3.0)
               + rows("sft/seed-1/step-5", "sft", 1, 5, 0.8, 0.8, 1.0) + rows("sft/seed-1/step-7", "sft", 1, 7, 0.9, 0.8, 1.5)
               + rows("sft/seed-1/step-10", "sft", 1, 10, 1.0, 0.7, 2.0))
    s = summarize(t, ["sft"], [0, 1], 0.9)["arms"]["sft"]
    assert s["forgetting"] == pytest.approx(0.4) and s["forgetting_sd"] == pytest.approx(0.1414213, rel=1e-5)
    assert s["capabilities"]["x"] == {"accuracy": pytest.approx(0.6), "logit_diff": pytest.approx(1.2),
                                      "forgetting": pytest.approx(0.4)}
    assert [p["step"] for p in s["curve"]] == [0, 5, 10]  # step 7: only seed 1 has it
    assert s["curve"][1]["target_accuracy_min"] == 0.8 and s["curve"][1]["target_accuracy_max"] == 0.9
    assert s["curve"][2]["forgetting"] == pytest.approx(0.4)
    # seed 0 reaches 0.25 + 0.9 * 0.75 = 0.925 at step 10; seed 1 as well
    assert s["seeds"]["0"]["adaptation_steps"] == 10 and s["adaptation_steps"] == 10 and s["adapted_seeds"] == 2


def test_a_nan_value_is_left_out_of_the_mean_and_counted_out():
    from dcv.stats import finite, mean, sd

    assert mean([1.0, float("nan"), 3.0, None]) == 2.0 and finite([1.0, float("nan"), None]) == [1.0]
    assert sd([1.0]) == 0.0 and sd([]) != sd([])  # NaN for no values


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """prepare-data, base and noise-perturbed arm checkpoints of the tiny world, built once for this module."""
    d = tmp_path_factory.mktemp("tiny")
    write_params(d / "params.yaml", TWO_ARMS)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    try:
        synthetic.tiny_project(d)
    finally:
        mp.undo()
    return d


def _copy_project(src: Path, dest: Path) -> None:
    for sub in ("data", "models", "metrics"):
        shutil.copytree(src / sub, dest / sub, dirs_exist_ok=True)


def test_stage_measures_every_checkpoint(tiny: Path, workdir: Path):
    _copy_project(tiny, workdir)
    write_params(workdir / "params.yaml", TWO_ARMS)
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 0, r.output
    m = json.loads((workdir / "metrics/evaluate-forgetting.json").read_text())
    caps = {"induction", "ioi", "facts", "arithmetic", "mcqa"}
    assert set(m["base"]["capabilities"]) == caps and m["base"]["forward_kl"] == pytest.approx(0.0, abs=1e-6)
    assert set(m["base"]["capabilities"]["ioi"]) == {"accuracy", "logit_diff", "forgetting"}
    for arm in ("sft", "rl"):
        a = m["arms"][arm]
        rows = a["seeds"]["0"]["checkpoints"]
        assert [r["step"] for r in rows] == [0, 3, 6] and rows[0]["forgetting"] == 0.0
        assert rows[-1]["forward_kl"] > rows[1]["forward_kl"] > 0  # more noise, further from the base
        assert a["forgetting"] == pytest.approx(rows[-1]["forgetting"])
        assert set(a["capabilities"]) == caps and "adaptation_steps" in a
        assert a["forgetting"] == pytest.approx(sum(v["forgetting"] for v in a["capabilities"].values()) / 5)
    assert m["arms"]["sft"]["forward_kl"] > m["arms"]["rl"]["forward_kl"]  # 4x the weight noise
    # Parameter distance: 0 for the base, growing with the noise (sigma * step / 6 per weight, 4x for sft).
    assert m["base"]["param_distance"] == 0.0
    for arm in ("sft", "rl"):
        rows = m["arms"][arm]["seeds"]["0"]["checkpoints"]
        assert rows[1]["param_distance"] > 0
        assert rows[2]["param_distance"] == pytest.approx(2 * rows[1]["param_distance"], rel=0.05)
    assert m["arms"]["sft"]["param_distance"] == pytest.approx(4 * m["arms"]["rl"]["param_distance"], rel=0.05)
    plots = workdir / "plots/forgetting"
    assert sorted(p.name for p in plots.iterdir()) == ["curves.csv"]
    assert (plots / "curves.csv").read_text().splitlines()[0].startswith("arm,step,target_accuracy,")
    from dcv.measurements import MeasurementTable

    table = MeasurementTable.read(workdir / "measurements/models.csv")
    assert len(table.rows) == 5 * (1 + 2 * 2)  # capabilities x (base + 2 arms x 2 checkpoints)
    assert table.first("rl/seed-0/step-6").final and not table.first("rl/seed-0/step-3").final
    assert table.forgetting("sft/seed-0/step-6")["mean"] == pytest.approx(m["arms"]["sft"]["forgetting"])
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dcv-test")
    runs = client.search_runs([exp.experiment_id], "tags.`dcv.stage` = 'evaluate-forgetting'")
    (parent,) = [r for r in runs if "dcv.arm" not in r.data.tags]
    assert parent.data.metrics["arms.sft.forgetting"] == m["arms"]["sft"]["forgetting"]
    children = {r.data.tags["dcv.arm"]: r for r in runs if "dcv.arm" in r.data.tags}
    assert set(children) == {"sft", "rl"} and all(r.info.status == "FINISHED" for r in runs)
    for arm, child in children.items():  # the arms' curves under the same names, one run each: comparable in the UI
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for key in ("target_accuracy", "prior_accuracy", "forward_kl"):
            assert [x.value for x in client.get_metric_history(child.info.run_id, key)] == \
                [p[key] for p in m["arms"][arm]["curve"]]
    # Rerun: the same bytes.
    outs = [plots / "curves.csv", workdir / "measurements/models.csv"]
    before = [p.read_bytes() for p in outs]
    assert CliRunner().invoke(app, ["stage", "evaluate-forgetting"]).exit_code == 0
    assert before == [p.read_bytes() for p in outs]
    m2 = json.loads((workdir / "metrics/evaluate-forgetting.json").read_text())
    m.pop("wall_s"), m2.pop("wall_s")
    assert m == m2


def test_missing_checkpoints_and_bad_params(tiny: Path, workdir: Path):
    _copy_project(tiny, workdir)
    write_params(workdir / "params.yaml", TWO_ARMS)
    forgetting = workdir / "data/prepared/forgetting"
    shutil.move(forgetting, workdir / "forgetting-split")  # accuracy is measured on the forgetting split only
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 2 and "data/prepared/forgetting: no probe sets" in r.output, r.output
    shutil.move(workdir / "forgetting-split", forgetting)
    write_params(workdir / "params.yaml", {**TWO_ARMS, "common": {"arms": ["sft", "rl"], "seeds": [0, 3]}})
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 2 and "models/sft/seed-3/checkpoints: no step-<n> checkpoints" in r.output, r.output
    write_params(workdir / "params.yaml", {**TWO_ARMS, "forgetting": {"adaptation_fraction": 0.0}})
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 2 and "params.yaml: forgetting.adaptation_fraction: Input should be greater than 0" in r.output
    write_params(workdir / "params.yaml", {**TWO_ARMS, "forgetting": {"lm_eval": {"enabled": True}}})
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 2 and "params.yaml: forgetting.lm_eval: enabled needs include_path" in r.output, r.output
    tasks = {"enabled": True, "include_path": str(REPO / "configs/lm_eval"), "tasks": ["humaneval"]}
    write_params(workdir / "params.yaml", {**TWO_ARMS, "forgetting": {"lm_eval": tasks}})
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])  # the task's data files, before any model loads
    assert r.exit_code == 2 and "params.yaml: forgetting.lm_eval: lm_eval task humaneval: reads local data files" in r.output, r.output
    (workdir / "lm-data").mkdir()
    write_params(workdir / "params.yaml", {**TWO_ARMS, "forgetting": {"lm_eval": {**tasks, "data_dir": "lm-data/nope"}}})
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 2 and "params.yaml: forgetting.lm_eval.data_dir: directory not found: lm-data/nope" in r.output
    assert not (workdir / "metrics/evaluate-forgetting.json").exists() and not (workdir / "mlflow.db").exists()


def test_lm_eval_bridge_without_the_harness_is_a_one_line_error(tiny: Path, workdir: Path, monkeypatch):
    from dcv import lm_eval_bridge

    _copy_project(tiny, workdir)
    (workdir / "tasks").mkdir()
    write_params(workdir / "params.yaml", {**TWO_ARMS, "forgetting": {"lm_eval": {"enabled": True, "include_path": "tasks",
                                                                                   "tasks": ["toy_mc"]}}})
    monkeypatch.setattr(lm_eval_bridge, "available", lambda: False)
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 2, r.output
    assert "forgetting.lm_eval.enabled: lm-evaluation-harness is not installed" in r.output


def test_lm_eval_results_are_flattened():
    from dcv.lm_eval_bridge import _flatten

    assert _flatten({"alias": "t", "acc,none": 0.5, "acc_stderr,none": "N/A", "acc_norm,none": 0.25,
                     "exact_match,strict-match": 1}) == {"acc": 0.5, "acc_norm": 0.25, "exact_match/strict-match": 1.0}


TASK_YAML = """task: toy_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
"""


@pytest.mark.slow
def test_lm_eval_bridge_runs_a_local_task(tiny: Path, tmp_path: Path):
    """With the `eval` extra installed: a local multiple-choice task on the toy base, offline."""
    pytest.importorskip("lm_eval")
    from dcv.lm_eval_bridge import evaluate
    from dcv.models import load_model

    rows = [json.loads(l) for l in (tiny / "data/prepared/target/eval.jsonl").read_text().splitlines()]
    data = tmp_path / "toy_mc.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["prompt"], "choices": r["choices"],
                                        "gold": "ABCD".index(r["answer"])}) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks/toy_mc.yaml").write_text(TASK_YAML.format(data=data))
    model, tok = load_model(tiny / "models/base")
    res = evaluate(model, tok, tmp_path / "tasks", ["toy_mc"], limit=8, batch_size=4)
    assert set(res) == {"toy_mc"} and 0.0 <= res["toy_mc"]["acc"] <= 1.0
