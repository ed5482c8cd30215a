"""Stage `evaluate-forgetting` and its measures; the optional lm-evaluation-harness bridge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stages.cli import app
from tests import synthetic
from tests.conftest import write_params


def test_forgetting_and_adaptation_step():
    from dcv.forgetting import adaptation_step, forgetting

    base = {"capabilities": {"a": {"accuracy": 1.0}, "b": {"accuracy": 0.8}}}
    f = forgetting(base, {"capabilities": {"a": {"accuracy": 0.5}, "b": {"accuracy": 0.9}}})
    assert f == {"mean": pytest.approx(0.2), "capabilities": {"a": 0.5, "b": pytest.approx(-0.1)}}
    curve = [(0, 0.2), (10, 0.3), (20, 0.7), (30, 0.9), (40, 1.0)]
    assert adaptation_step(curve, 0.9) == 40  # threshold 0.2 + 0.9 * 0.8 = 0.92
    assert adaptation_step(curve, 0.5) == 20
    assert adaptation_step([(0, 0.5), (10, 0.4), (20, 0.5)], 0.9) is None  # no gain over the base


def test_summarize_means_spread_and_per_capability():
    from dcv.forgetting import summarize

    def m(t, a, kl):
        return {"target_accuracy": t, "prior_accuracy": a, "forward_kl": kl,
                "capabilities": {"x": {"accuracy": a, "logit_diff": 2 * a}}}

    base = m(0.25, 1.0, 0.0)
    runs = {"sft": {0: {5: m(0.9, 0.6, 2.0), 10: m(1.0, 0.5, 3.0)}, 1: {5: m(0.8, 0.8, 1.0), 10: m(1.0, 0.7, 2.0)}}}
    s = summarize(base, runs, 0.9)["arms"]["sft"]
    assert s["forgetting"] == pytest.approx(0.4) and s["forgetting_std"] == pytest.approx(0.1)
    assert s["capabilities"]["x"] == {"accuracy": pytest.approx(0.6), "logit_diff": pytest.approx(1.2),
                                      "forgetting": pytest.approx(0.4)}
    assert [p["step"] for p in s["curve"]] == [0, 5, 10]
    assert s["curve"][1]["target_accuracy_min"] == 0.8 and s["curve"][1]["target_accuracy_max"] == 0.9
    # seed 0 reaches 0.25 + 0.9 * 0.75 = 0.925 at step 10; seed 1 as well
    assert s["seeds"]["0"]["adaptation_steps"] == 10 and s["adaptation_steps"] == 10 and s["adapted_seeds"] == 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """prepare-data, base and noise-perturbed arm checkpoints of the tiny world, built once for this module."""
    d = tmp_path_factory.mktemp("tiny")
    write_params(d / "params.yaml")
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
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 0, r.output
    m = json.loads((workdir / "metrics/evaluate-forgetting.json").read_text())
    caps = {"induction", "ioi", "facts", "arithmetic", "mcqa"}
    assert set(m["base"]["capabilities"]) == caps and m["base"]["forward_kl"] == pytest.approx(0.0, abs=1e-6)
    assert set(m["base"]["capabilities"]["ioi"]) == {"accuracy", "logit_diff"}
    for arm in ("sft", "rl"):
        a = m["arms"][arm]
        rows = a["seeds"]["0"]["checkpoints"]
        assert [r["step"] for r in rows] == [0, 3, 6] and rows[0]["forgetting"] == 0.0
        assert rows[-1]["forward_kl"] > rows[1]["forward_kl"] > 0  # more noise, further from the base
        assert a["forgetting"] == pytest.approx(rows[-1]["forgetting"])
        assert set(a["capabilities"]) == caps and "adaptation_steps" in a
        assert a["forgetting"] == pytest.approx(sum(v["forgetting"] for v in a["capabilities"].values()) / 5)
    assert m["arms"]["sft"]["forward_kl"] > m["arms"]["rl"]["forward_kl"]  # 4x the weight noise
    plots = workdir / "plots/forgetting"
    assert sorted(p.name for p in plots.iterdir()) == ["checkpoints.csv", "curve-rl.csv", "curve-sft.csv"]
    assert (plots / "curve-sft.csv").read_text().splitlines()[0].startswith("step,target_accuracy,")
    assert len((plots / "checkpoints.csv").read_text().splitlines()) == 1 + 1 + 2 * 2
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dcv-test")
    (run,) = client.search_runs([exp.experiment_id], "tags.`dcv.stage` = 'evaluate-forgetting'")
    assert run.data.metrics["arms.sft.forgetting"] == m["arms"]["sft"]["forgetting"]
    assert [x.value for x in client.get_metric_history(run.info.run_id, "sft/forward_kl")] == \
        [p["forward_kl"] for p in m["arms"]["sft"]["curve"]]
    # Rerun: the same bytes.
    before = {p.name: p.read_bytes() for p in plots.iterdir()}
    assert CliRunner().invoke(app, ["stage", "evaluate-forgetting"]).exit_code == 0
    assert before == {p.name: p.read_bytes() for p in plots.iterdir()}
    m2 = json.loads((workdir / "metrics/evaluate-forgetting.json").read_text())
    m.pop("wall_s"), m2.pop("wall_s")
    assert m == m2


def test_missing_checkpoints_and_bad_params(tiny: Path, workdir: Path):
    _copy_project(tiny, workdir)
    write_params(workdir / "params.yaml", {"common": {"seeds": [0, 3]}})
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 2 and "models/sft/seed-3: no checkpoints" in r.output, r.output
    write_params(workdir / "params.yaml", {"forgetting": {"adaptation_fraction": 0.0}})
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 2 and "params.yaml: forgetting.adaptation_fraction: Input should be greater than 0" in r.output
    write_params(workdir / "params.yaml", {"forgetting": {"lm_eval": {"enabled": True}}})
    r = CliRunner().invoke(app, ["stage", "evaluate-forgetting"])
    assert r.exit_code == 2 and "params.yaml: forgetting.lm_eval: enabled needs include_path" in r.output, r.output
    assert not (workdir / "metrics/evaluate-forgetting.json").exists() and not (workdir / "mlflow.db").exists()


def test_lm_eval_bridge_without_the_harness_is_a_one_line_error(tiny: Path, workdir: Path, monkeypatch):
    from dcv import lm_eval_bridge

    _copy_project(tiny, workdir)
    (workdir / "tasks").mkdir()
    write_params(workdir / "params.yaml", {"forgetting": {"lm_eval": {"enabled": True, "include_path": "tasks",
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
