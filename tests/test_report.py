"""Stage `report` on the outputs of evaluate-forgetting (tiny world, perturbed checkpoints) and score-dcv
(synthetic circuits for the same checkpoints): a readable document whose numbers all come from the metrics."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stages.cli import app
from tests import synthetic
from tests.conftest import write_params


def _stage(name: str):
    r = CliRunner().invoke(app, ["stage", name])
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """Everything `report` reads: base, arms (seeds 0 and 1), evaluate-forgetting, score-dcv."""
    d = tmp_path_factory.mktemp("chain")
    write_params(d / "params.yaml", {"common": {"seeds": [0, 1], "arms": ["sft", "rl"]},
                                     "dcv": {"n_bootstrap": 100, "pairs": [["sft", "rl"]]}})
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    mp.chdir(d)
    try:
        synthetic.tiny_project(d, seeds=(0, 1))
        synthetic.write(d, seeds=(0, 1), table=False)
        _stage("evaluate-forgetting")
        _stage("score-dcv")
    finally:
        mp.undo()
    return d


def _copy(src: Path, dest: Path) -> None:
    for sub in ("metrics", "plots", "measurements"):
        shutil.copytree(src / sub, dest / sub, dirs_exist_ok=True)
    shutil.copy(src / "params.yaml", dest / "params.yaml")


def test_report_is_complete_computed_and_deterministic(chain: Path, workdir: Path):
    _copy(chain, workdir)
    _stage("report")
    rep = workdir / "reports"
    text = (rep / "report.md").read_text()
    for section in ("## Verdict", "## Setup", "## Adaptation and forgetting", "## Circuits", "## What predicts forgetting",
                    "## As the study measures it", "## Sanity checks"):
        assert section in text, section
    figs = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text)
    assert {f.split("/")[1] for f in figs} == {
        "target-accuracy.png", "prior-accuracy.png", "pareto.png", "heads-ioi.png", "heads-induction.png", "dcv-sft-rl.png",
        "forgetting-vs-predictors.png", "forgetting-vs-dcv-paired.png", "study-overlap-target.png"}
    for f in figs:
        assert (rep / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Every caption is one line in italics right after its figure.
    for m in re.finditer(r"!\[([^\]]*)\]\(figures/[^)]+\)\n\n\*([^\n]+)\*\n", text):
        assert m.group(1) == m.group(2)
    assert len(re.findall(r"!\[", text)) == len(re.findall(r"!\[([^\]]*)\]\(figures/[^)]+\)\n\n\*[^\n]+\*\n", text))
    # The verdict is phrased from the numbers of the metrics files.
    fg = json.loads((workdir / "metrics/evaluate-forgetting.json").read_text())
    sc = json.loads((workdir / "metrics/score-dcv.json").read_text())
    summary = json.loads((rep / "summary.json").read_text())
    sft, rl = fg["arms"]["sft"]["forgetting"], fg["arms"]["rl"]["forgetting"]
    assert summary["forgets_more"] == (sft > rl)
    assert ("SFT forgets more" if sft > rl else "SFT does not forget more") in text
    assert f"{sft:.3f}" in text and f"{rl:.3f}" in text
    assert summary["dcv"]["sft-rl"]["equal_steps"]["side"] == "above"  # synthetic: SFT degrades 0.6, RL 0.15
    assert "DCV > 0 with its 95% CI above 0 at equal steps (step 6)" in text
    lo, hi = sc["mean"]["ci95"]["low"], sc["mean"]["ci95"]["high"]
    assert f"{sc['mean']['dcv']:.3f} [{lo:.3f}, {hi:.3f}]" in text
    pr = sc["predictors"]["capability"]
    assert pr["n_points"] == 2 * 2 * 2 * 2 and pr["n_runs"] == 4  # arms x seeds x steps x capabilities; runs
    cv = pr["predictors"]["cv"]["pooled"]
    assert f"{cv['r2']:.2f} [{cv['ci95']['low']:.2f}, {cv['ci95']['high']:.2f}]" in text
    assert summary["r2"]["capability"]["cv"]["pooled"] == cv["r2"]
    verdict = summary["cv_vs_logit_diff_drop"]["capability"]
    assert ("CV earns its place" in text) == (verdict == {"pooled": "beats", "arm_fe": "beats"})
    assert "does not earn its place" in text or "CV earns its place" in text
    # Equal accuracy: the tiny models gain no target accuracy, so there is no level to compare at; the report says
    # so (and would list every level beyond the tolerance with its gap).
    assert sc["mean"]["equal_accuracy"] is None and "DCV at equal target accuracy is not reported" in text
    for lv in sc["comparisons"]["sft-rl"]["equal_accuracy"]["levels"]:
        assert f"{lv['gap']:.3f} (beyond tolerance)" in text
    # Statistics, splits, flags and the sanity checks that can fail.
    assert "t·√(V_seed + V_pair)" in text and "discovery split" in text and "P by chance" in text
    assert summary["sanity_passed"] == {"self": True, "zeroed_vs_base": True, "same_arm_seeds": True}
    assert "must reject at 5%" in text and "FAILED" not in text
    assert "toy-world Qwen2" in text and "seeds | 0, 1" in text
    # The study's section: its reported numbers marked, this run's computed (synthetic masks: SFT's last step keeps
    # half of C0, RL all of it).
    assert "297 of 576 (51.6%)" in text and "*reported*" in text and "| base | 297 of 576 (51.6%) | 4 of 8 (50.0%) |" in text
    assert summary["study"]["target"]["overlap"] == {"sft": 0.5, "rl": 1.0}
    assert summary["study"]["target"]["overlap_difference_side"] == {"sft-rl": "below"}
    assert "SFT vs RL, target, at equal steps (step 6): overlap with the base's DBM circuit 50.0% vs 100.0%" in text
    assert "RL keeps more of the base circuit." in text and "The study reports" not in text  # rl: no reported numbers
    # MLflow: the run, its verdict numbers and the report as an artifact.
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dcv-test")
    (run,) = client.search_runs([exp.experiment_id], "tags.`dcv.stage` = 'report'")
    assert run.data.metrics["forgetting.sft"] == sft
    assert "report/report.md" in {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    # Rerun: the same bytes, figures included.
    before = {p: p.read_bytes() for p in sorted(rep.rglob("*")) if p.is_file()}
    _stage("report")
    assert before == {p: p.read_bytes() for p in sorted(rep.rglob("*")) if p.is_file()}


def test_study_section_states_whether_the_run_agrees_with_the_reported_direction(chain: Path, tmp_path: Path):
    """The chain's SFT-vs-RL study block read as SFT vs RL_SFT (the study's RL, which has reported numbers): RL_SFT
    keeps more of C0, the study's direction; with the arms' masks swapped, the opposite."""
    from dcv.report import study

    sc = json.loads((chain / "metrics/score-dcv.json").read_text().replace('"rl"', '"rl_sft"').replace("sft-rl", "sft-rl_sft"))
    md, summary = study.section(sc, sc["comparisons"], tmp_path)
    text = "\n".join(md)
    assert "RL_SFT keeps more of the base circuit. The study reports SFT 52.0% and RL_SFT 68.0% (reported): the same direction." in text
    assert summary["target"]["overlap_difference_side"] == {"sft-rl_sft": "below"}
    eq = sc["study"]["capabilities"]["target"]["pairs"]["sft-rl_sft"]["equal_steps"]
    d = eq["difference"]["overlap"]
    d["diff"], d["low"], d["high"] = -d["diff"], -d["high"], -d["low"]
    assert "the opposite direction." in "\n".join(study.section(sc, sc["comparisons"], tmp_path)[0])
    assert study.section({**sc, "study": {"capabilities": {}}}, sc["comparisons"], tmp_path) == ([], {})


def test_report_without_inputs_stops_with_one_line(workdir: Path):
    r = CliRunner().invoke(app, ["stage", "report"])
    assert r.exit_code == 2 and "metrics/score-dcv.json: not found" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (workdir / "reports").exists() and not (workdir / "mlflow.db").exists()


@pytest.mark.slow
def test_dvc_reruns_only_what_a_param_feeds(tmp_path: Path, monkeypatch):
    """dvc repro of score-dcv, evaluate-forgetting and report (upstream outputs made by hand): editing
    dcv.faithfulness_target reruns only score-dcv and report; forgetting.adaptation_fraction only
    evaluate-forgetting and report. `dvc plots show` renders the curves."""
    import yaml

    from tests.conftest import make_repo, ran_stages, run

    repo = make_repo(tmp_path / "repo", {"common": {"seeds": [0, 1], "arms": ["sft", "rl"]},
                                         "dcv": {"n_bootstrap": 50, "pairs": [["sft", "rl"]]}})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
    synthetic.tiny_project(repo, seeds=(0, 1))
    synthetic.write(repo, seeds=(0, 1), table=False)
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    dvc["stages"] = {k: v for k, v in dvc["stages"].items() if k in ("score-dcv", "evaluate-forgetting", "report")}
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))

    def repro() -> set[str]:
        r = run(["dvc", "repro"], repo)
        assert r.returncode == 0, r.stdout + r.stderr
        return ran_stages(r.stdout)

    def edit(section: str, key: str, value) -> None:
        p = yaml.safe_load((repo / "params.yaml").read_text())
        p[section][key] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))

    assert repro() == {"score-dcv", "evaluate-forgetting", "report"}
    assert repro() == set()
    edit("dcv", "faithfulness_target", 0.9)
    assert repro() == {"score-dcv", "report"}
    assert json.loads((repo / "metrics/score-dcv.json").read_text())["capabilities"]["ioi"]["base_circuit"]["k"] == 3
    edit("forgetting", "adaptation_fraction", 0.5)
    assert repro() == {"evaluate-forgetting", "report"}
    r = run(["dvc", "plots", "show", "-o", str(tmp_path / "plots-html")], repo)
    assert r.returncode == 0, r.stdout + r.stderr
    html = (tmp_path / "plots-html/index.html").read_text()
    assert "target accuracy vs step" in html and "circuit vulnerability vs step" in html


def test_equal_accuracy_verdict_names_the_gap_or_why_there_is_no_level():
    from dcv.report.document import equal_accuracy_verdict

    lv = {"level": 0.9, "gap": 0.1, "within_tolerance": False,
          "largest_gap": {"arm": "sft", "seed": 0, "steps": [100, 200], "accuracies": [0.7, 1.0]}}
    cmp = {"equal_accuracy": {"tolerance": 0.05, "levels": [lv], "skipped": []}, "mean": {"equal_accuracy": None},
           "capabilities": {}}
    text = equal_accuracy_verdict(cmp, [], "sft", "rl")
    assert "not reported as a headline" in text and "SFT seed 0 goes from 0.70 at step 100 to 1.00 at step 200" in text
    cmp["equal_accuracy"]["levels"] = []
    assert "no level lies within every seed's range" in equal_accuracy_verdict(cmp, [], "sft", "rl")
    ci = {"low": 0.1, "high": 0.3}
    cmp = {"equal_accuracy": {"tolerance": 0.05, "levels": [], "skipped": []},
           "mean": {"equal_accuracy": {"level": 0.8, "gap": 0.02, "dcv": 0.2, "ci95": ci}},
           "capabilities": {"ioi": {"equal_accuracy": {"ci95": ci}}}}
    text = equal_accuracy_verdict(cmp, ["ioi"], "sft", "rl")
    assert text.startswith("DCV > 0 with its 95% CI above 0 at equal target accuracy (0.800, gap ≤ 0.020)")


def test_the_study_s_output_kl_claim_is_set_beside_this_run_s():
    from dcv.report.study import kl_line

    line = kl_line({"sft": 0.2, "rl_sft": 0.35, "rl": 0.5})
    assert "(*reported*, no figure)" in line and "RL_SFT 0.350, SFT 0.200: the same direction" in line
    assert "the opposite direction" in kl_line({"sft": 0.4, "rl_sft": 0.1})
    assert kl_line({"sft": 0.4, "rl": 0.1}) is None
