"""`dcv sweep`: queueing the Pareto sweep as DVC experiments and reporting its frontier and R² table."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app
from tests import synthetic
from tests.conftest import REPO


def test_the_documented_sweep_queues_four_rates_per_arm_and_five_seeds():
    from stages.sweep import load_spec, queue_commands

    spec = load_spec(REPO / "sweeps/pareto.yaml")
    cmds = queue_commands(spec)
    assert len(cmds) >= 4 and len(spec["seeds"]) >= 5
    assert set(spec["learning_rate"]) == set(yaml.safe_load((REPO / "params.yaml").read_text())["common"]["arms"])
    assert cmds[0][:6] == ["dvc", "exp", "run", "--queue", "-n", "pareto-0"]
    assert "common.seeds=[0,1,2,3,4]" in cmds[0] and "sft.learning_rate=0.0001" in cmds[0]
    r = CliRunner().invoke(app, ["sweep", "queue", "--spec", str(REPO / "sweeps/pareto.yaml"), "--dry-run"])
    assert r.exit_code == 0 and r.output.count("dvc exp run --queue") == len(cmds)


def test_a_bad_spec_is_one_line(tmp_path: Path):
    f = tmp_path / "s.yaml"
    f.write_text("name: x\nseeds: [0]\nlearning_rate: {sft: [1e-4, 2e-4], rl: [1e-4]}\n")
    r = CliRunner().invoke(app, ["sweep", "queue", "--spec", str(f), "--dry-run"])
    assert r.exit_code == 2 and "learning_rate: needs, per arm, lists of learning rates of one common length" in r.output


def test_frontier_keeps_only_undominated_points():
    from stages.sweep import best_prior_at, frontier

    pts = [(0.2, 0.9), (0.5, 0.8), (0.5, 0.7), (0.4, 0.6), (0.9, 0.3), (0.8, 0.3), (0.9, 0.3)]
    f = frontier(pts)
    assert f == [(0.2, 0.9), (0.5, 0.8), (0.9, 0.3)]
    assert best_prior_at(f, 0.5) == 0.8 and best_prior_at(f, 0.6) == 0.3 and best_prior_at(f, 0.95) is None


def _experiment(root: Path, degrade: dict, seeds=(0, 1)) -> tuple[dict, dict]:
    """(evaluate-forgetting metrics, score-dcv metrics) of a synthetic run: the forgetting summary of the synthetic
    measurement table and score-dcv's checkpoints from its circuit scores."""
    from dcv.forgetting import summarize
    from dcv.measurements import MeasurementTable

    synthetic.write(root, seeds=seeds, degrade=degrade)
    t = MeasurementTable.read(root / "measurements/models.csv")
    fg = summarize(t, list(degrade), list(seeds), 0.9)
    pts = [{"model": r.model, "arm": r.arm, "seed": r.seed, "step": r.step, "forgetting": t.forgetting(r.model)["mean"],
            "cv": 2 * t.forgetting(r.model)["mean"], "logit_diff_drop": r.forward_kl, "forward_kl": r.forward_kl,
            "param_distance": r.param_distance} for r in t.rows if r.arm != "base" and r.capability == "ioi"]
    return json.loads(json.dumps(fg)), {"seeds": list(seeds), "checkpoints": pts}


def test_report_reads_every_experiment_and_pools_their_runs(tmp_path: Path):
    """Three experiments in a `dvc exp show --json` listing (one of them the workspace, identical to its baseline):
    the workspace counts once, the one that did not finish is noted, and every run of the rest is a cluster."""
    from stages.sweep import experiments, summarize, write_report

    files = {}
    for name, lr in (("workspace", 1e-4), ("base-commit", 1e-4), ("e1", 5e-4)):
        d = tmp_path / name
        d.mkdir()
        k = 1e-4 if name != "e1" else 5e-4
        fg, sc = _experiment(d, {"sft": 6000 * k, "rl": 1500 * k})
        files[name] = {"metrics/evaluate-forgetting.json": json.dumps(fg), "metrics/score-dcv.json": json.dumps(sc)}
    files["e2"] = {"metrics/evaluate-forgetting.json": files["e1"]["metrics/evaluate-forgetting.json"]}
    exp = lambda name, lr: {"rev": name, "name": name, "data": {"params": {"params.yaml": {"data": {  # noqa: E731
        "sft": {"learning_rate": lr}, "rl": {"learning_rate": lr}}}}}, "error": None}
    show = [{**exp("workspace", 1e-4), "experiments": None},
            {**exp("base-commit", 1e-4), "experiments": [{"revs": [exp("e1", 5e-4)]}, {"revs": [exp("e2", 1e-3)]}]}]
    exps, notes = experiments(show, lambda rev, path: files.get(rev, {}).get(path))
    assert [e.name for e in exps] == ["e1", "workspace"]  # experiments first, then the workspace
    assert notes == ["e2: no metrics/score-dcv.json (not run to the end)"]
    s = summarize(exps, 200, 0)
    assert s["n_runs"] == 2 * 2 * 2 and s["runs_per_arm"] == {"rl": 4, "sft": 4}
    assert s["predictors"]["n_runs"] == 8 and s["predictors"]["predictors"]["cv"]["pooled"]["r2"] == pytest.approx(1.0)
    assert {e["name"]: e["learning_rate"]["sft"] for e in s["experiments"]} == {"workspace": 1e-4, "e1": 5e-4}
    for front in s["frontier"].values():
        xs = [x for x, _ in front]
        assert xs == sorted(xs) and [y for _, y in front] == sorted((y for _, y in front), reverse=True)
    ends = {(f["experiment"], f["arm"]): f for f in s["finals"]}
    assert set(ends) == {(e, a) for e in ("workspace", "e1") for a in ("sft", "rl")}
    for (e, a), f in ends.items():  # each run's last checkpoint, averaged over its two seeds
        last = [r for r in s["rows"] if r["experiment"] == e and r["arm"] == a and r["final"]]
        assert f["n_seeds"] == 2 and f["learning_rate"] == (1e-4 if e == "workspace" else 5e-4)
        assert f["prior_accuracy"] == pytest.approx(sum(r["prior_accuracy"] for r in last) / 2)
    path = write_report(s, tmp_path / "out", notes)
    text = path.read_text()
    assert "# The Pareto sweep" in text and "pareto.png" in text and "e2: no metrics/score-dcv.json" in text
    assert "## Where each run ends" in text
    assert (tmp_path / "out/pareto.png").read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "out/runs.csv").read_text().splitlines()
    assert rows[0].startswith("experiment,arm,seed,step,learning_rate") and len(rows) == 1 + 2 * 2 * 2 * 2


def test_a_run_two_experiments_hold_counts_once_in_the_experiment(tmp_path: Path):
    """The baseline commit at one experiment's learning rate, with fewer seeds (the sweep's seeds 0-4 against the
    pipeline's 0-2): its runs are the experiment's, so they count once, in the experiment, and each is noted.
    Experiments not finished are left out: their commits hold their params beside the baseline's metrics."""
    from stages.sweep import experiments, summarize

    files = {}
    for name, seeds in (("workspace", (0, 1)), ("e1", (0, 1, 2))):
        d = tmp_path / name
        d.mkdir()
        fg, sc = _experiment(d, {"sft": 0.6, "rl": 0.15}, seeds)
        files[name] = {"metrics/evaluate-forgetting.json": json.dumps(fg), "metrics/score-dcv.json": json.dumps(sc)}
    exp = lambda name, seeds, lr: {"rev": name, "name": name, "data": {"params": {"params.yaml": {"data": {  # noqa: E731
        "common": {"seeds": list(seeds)}, "sft": {"learning_rate": lr}, "rl": {"learning_rate": lr}}}}}, "error": None}
    files["e2"] = files["e3"] = files["workspace"]  # a queued or running experiment's commit: the baseline's metrics
    show = [{**exp("workspace", (0, 1), 1e-4), "experiments": [
        {"revs": [exp("e1", (0, 1, 2), 1e-4)], "executor": {"state": "success"}},
        {"revs": [exp("e2", (0, 1, 2), 5e-4)], "executor": {"state": "running"}},
        {"revs": [exp("e3", (0, 1, 2), 1e-3)], "executor": {"state": "queued"}}]}]
    exps, notes = experiments(show, lambda rev, path: files.get(rev, {}).get(path))
    assert [e.name for e in exps] == ["e1", "workspace"]
    assert notes == ["e2: running (not finished)", "e3: queued (not finished)"]
    notes = []
    s = summarize(exps, 50, 0, notes=notes)
    assert s["runs_per_arm"] == {"rl": 3, "sft": 3} and {r["experiment"] for r in s["rows"]} == {"e1"}
    assert [e["name"] for e in s["experiments"]] == ["e1"]
    assert sorted(notes) == [f"workspace/{a}/seed-{i}: the same run as e1/{a}/seed-{i} (same params and seed), counted "
                             f"once" for a in ("rl", "sft") for i in (0, 1)]
    show[0]["data"]["params"]["params.yaml"]["data"]["sft"]["learning_rate"] = 2e-4  # other params: other runs
    exps, notes = experiments(show, lambda rev, path: files.get(rev, {}).get(path))
    assert summarize(exps, 50, 0, notes=notes)["runs_per_arm"] == {"rl": 5, "sft": 5} and len(notes) == 2


MAKE_ARMS = textwrap.dedent('''
    """Test stand-in for the arms: checkpoints = the base plus weight noise proportional to each arm's learning rate."""
    import json, shutil
    from pathlib import Path

    import torch
    import yaml

    from dcv.models import load_model, save_model

    p = yaml.safe_load(Path("params.yaml").read_text())
    for arm in ("sft", "rl"):
        lr = p[arm]["learning_rate"]
        for s in p["common"]["seeds"]:
            for st in (3, 6):
                model, tok = load_model(Path("models/base"))
                g = torch.Generator().manual_seed(1000 * s + st + (0 if arm == "sft" else 7))
                with torch.no_grad():
                    for q in model.parameters():
                        q.add_(torch.randn(q.shape, generator=g) * 100 * lr * st / 6)
                d = Path(f"models/{arm}/seed-{s}/checkpoints/step-{st}")
                save_model(model, tok, d, {"tokenizer": "word-level", "arm": arm, "seed": s, "step": st,
                                           "config": {"learning_rate": lr}})
            shutil.copytree(f"models/{arm}/seed-{s}/checkpoints/step-6", f"models/{arm}/seed-{s}/final")
''')


@pytest.mark.slow
def test_queued_experiments_in_a_dvc_repo_make_a_sweep_report(built_repo: Path, tmp_path: Path):
    """A tiny pipeline (prepare-data and base, copied from the session's built repository, stand-in arms whose
    weight noise grows with the learning rate, and the real evaluate-forgetting, extract-circuits and score-dcv),
    two queued experiments at two learning rates, run by DVC's queue, then `dcv sweep report` on
    `dvc exp show --json`."""
    from tests.conftest import copy_repo, run

    repo = copy_repo(built_repo, tmp_path / "repo", {"common": {"arms": ["sft", "rl"], "seeds": [0]},
                                                     "dcv": {"pairs": [["sft", "rl"]], "n_bootstrap": 50},
                                                     "circuits": {"batch_size": 8, "heads_per_forward": 8,
                                                                  "validate": False}})
    (repo / "make_arms.py").write_text(MAKE_ARMS)
    dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
    keep = {k: v for k, v in dvc["stages"].items()
            if k in ("prepare-data", "base", "evaluate-forgetting", "extract-circuits", "score-dcv")}
    keep["arms"] = {"cmd": "python make_arms.py", "deps": ["make_arms.py", "models/base"],
                    "params": ["sft.learning_rate", "rl.learning_rate", "common.seeds"],
                    "outs": ["models/sft", "models/rl"]}
    dvc["stages"] = keep
    dvc.pop("plots", None)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    # the stages no experiment changes ran once, in the built repository: the queued runs restore them from the cache
    r = run(["dvc", "repro", "prepare-data", "base"], repo)
    assert r.returncode == 0 and "Running stage" not in r.stdout, r.stdout + r.stderr
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "sweep"]):
        assert run(cmd, repo).returncode == 0
    for i, lr in enumerate((1e-4, 6e-4)):
        r = run(["dvc", "exp", "run", "--queue", "-n", f"lr-{i}", "-S", f"sft.learning_rate={lr}",
                 "-S", f"rl.learning_rate={lr / 4}"], repo)
        assert r.returncode == 0, r.stdout + r.stderr
    assert run(["dvc", "queue", "start", "-j", "1"], repo).returncode == 0
    deadline = time.time() + 900
    while True:
        st = run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in st and "Running" not in st:
            break
        assert time.time() < deadline, st
        time.sleep(2)
    assert st.count("Success") == 2, st + "\n".join(p.read_text()[-2000:] for p in (repo / ".dvc/tmp/exps/run").rglob("*.out"))
    r = run(["dcv", "sweep", "report", "--n-bootstrap", "50"], repo)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((repo / "sweep/summary.json").read_text())
    assert sorted(e["name"] for e in s["experiments"]) == ["lr-0", "lr-1"] and s["n_runs"] == 4
    assert {e["name"]: e["learning_rate"]["sft"] for e in s["experiments"]} == {"lr-0": 1e-4, "lr-1": 6e-4}
    assert set(s["frontier"]) == {"sft", "rl"} and s["predictors"]["n_points"] == 2 * 2 * 2
    text = (repo / "sweep/report.md").read_text()
    assert "lr-0" in text and "lr-1" in text and "R² pooled" in text
