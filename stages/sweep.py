"""`dcv sweep`: the Pareto sweep of RL's Razor with DVC experiments, and its report.

    dcv sweep queue [--spec sweeps/pareto.yaml] [--dry-run]    queue one DVC experiment per learning rate
    dvc queue start -j 1                                         run them (one at a time on a small machine)
    dcv sweep report [--out sweep] [--exp-json FILE] [--all-commits]

`queue` reads a sweep spec (the seeds, and per arm the learning rates: the i-th experiment sets the i-th rate of
every arm, and any other overrides) and runs `dvc exp run --queue -n <name>-<i> -S ...` for each.

`report` lists the experiments with `dvc exp show --json` (or a saved copy, `--exp-json`), reads each one's
`metrics/evaluate-forgetting.json` and `metrics/score-dcv.json` at its commit (`git show <rev>:<path>`: `dvc exp
show` drops the lists those files hold; the workspace's from disk), and writes to `--out`:

    report.md      the frontier of target accuracy against prior accuracy per arm, the best prior accuracy each arm
                   keeps at given target accuracies, where each run ends (per arm and learning rate, mean ± SD over
                   seeds), and the R² table of forgetting against every predictor
                   (`dcv.scoring.predictors`) over every run of the sweep, intervals resampling whole runs
    pareto.png     every checkpoint of every run (dots) and each arm's frontier (line)
    runs.csv       one row per experiment, arm, seed and checkpoint
    summary.json   the numbers of report.md

A run is one (experiment, arm, seed); experiments whose metrics are identical (the workspace and its baseline
commit) count once, and so does a run two of them hold (same arm, seed and params but the seed list: the baseline
at one experiment's learning rates with fewer seeds), in the experiment; the report's "Left out" names each.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dcv.errors import DcvError

FILES = ("metrics/evaluate-forgetting.json", "metrics/score-dcv.json")


# ---- queue ---------------------------------------------------------------------------------------------------------

def load_spec(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise DcvError(f"{path}: sweep spec not found")
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for key in ("name", "seeds", "learning_rate"):
        if key not in spec:
            raise DcvError(f"{path}: {key}: missing")
    rates = spec["learning_rate"]
    if not isinstance(rates, dict) or not rates or len({len(v) for v in rates.values()}) != 1:
        raise DcvError(f"{path}: learning_rate: needs, per arm, lists of learning rates of one common length")
    if not spec["seeds"] or len(set(spec["seeds"])) != len(spec["seeds"]):
        raise DcvError(f"{path}: seeds: needs distinct seeds")
    return spec


def queue_commands(spec: dict) -> list[list[str]]:
    """One `dvc exp run --queue` command per learning-rate index."""
    n = len(next(iter(spec["learning_rate"].values())))
    seeds = "[" + ",".join(str(s) for s in spec["seeds"]) + "]"
    out = []
    for i in range(n):
        cmd = ["dvc", "exp", "run", "--queue", "-n", f"{spec['name']}-{i}", "-S", f"common.seeds={seeds}"]
        for arm, rates in sorted(spec["learning_rate"].items()):
            cmd += ["-S", f"{arm}.learning_rate={rates[i]}"]
        for key, value in sorted((spec.get("set") or {}).items()):
            cmd += ["-S", f"{key}={json.dumps(value) if isinstance(value, (list, dict)) else value}"]
        out.append(cmd)
    return out


def queue(spec_path: str, dry_run: bool) -> None:
    for cmd in queue_commands(load_spec(Path(spec_path))):
        print(" ".join(cmd), flush=True)
        if not dry_run:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise DcvError(f"{' '.join(cmd[:6])}: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")


# ---- report --------------------------------------------------------------------------------------------------------

@dataclass
class Experiment:
    name: str
    rev: str
    params: dict
    forgetting: dict  # metrics/evaluate-forgetting.json
    score: dict  # metrics/score-dcv.json


def _entries(show: list, notes: list[str]) -> list[tuple[str, str, dict]]:
    """(name, rev, params.yaml data) of every row of `dvc exp show --json`: the finished experiments first, then the
    workspace and baseline commits (so that a run both hold is counted in its experiment; `run_points`). A queued,
    running or failed experiment is left out with a note: its commit holds its params but the baseline's metrics."""
    exps, tops = [], []

    def add(e, out):
        data = e.get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        out.append((e.get("name") or e.get("rev"), e.get("rev"), params))

    for row in show:
        if row.get("error"):
            continue
        add(row, tops)
        for group in row.get("experiments") or []:
            state = (group.get("executor") or {}).get("state")
            for e in group.get("revs") or []:
                if e.get("error"):
                    continue
                if state not in (None, "success"):
                    notes.append(f"{e.get('name') or e.get('rev')}: {state} (not finished)")
                    continue
                add(e, exps)
    return exps + tops


def git_reader(root: Path):
    """read(rev, path) -> text or None: the workspace's file, or the file at commit `rev`."""
    def read(rev: str, path: str) -> str | None:
        if rev == "workspace":
            f = root / path
            return f.read_text(encoding="utf-8") if f.is_file() else None
        r = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else None
    return read


def experiments(show: list, read) -> tuple[list[Experiment], list[str]]:
    """The experiments with both metrics files (deduplicated by their content) and notes on those left out."""
    seen, out, notes = set(), [], []
    for name, rev, params in _entries(show, notes):
        texts = [read(rev, f) for f in FILES]
        if any(t is None for t in texts):
            notes.append(f"{name}: no {' / '.join(f for f, t in zip(FILES, texts) if t is None)} (not run to the end)")
            continue
        key = hashlib.sha256("\0".join(texts).encode()).hexdigest()
        if key in seen:
            continue
        seen.add(key)
        try:
            fg, sc = (json.loads(t) for t in texts)
        except json.JSONDecodeError as e:
            raise DcvError(f"{name} ({rev}): a metrics file is not valid JSON ({e.msg})") from None
        if "checkpoints" not in sc:
            notes.append(f"{name}: metrics/score-dcv.json has no `checkpoints` (made by an older score-dcv)")
            continue
        out.append(Experiment(str(name), str(rev), params, fg, sc))
    return out, notes


def learning_rate(e: Experiment, arm: str):
    return (e.params.get(arm) or {}).get("learning_rate")


def run_key(e: Experiment, arm: str, seed: str) -> str:
    """What makes a run: its arm, its seed and every param but the list of seeds (which only says which runs an
    experiment holds)."""
    params = {k: ({kk: vv for kk, vv in v.items() if kk != "seeds"} if k == "common" and isinstance(v, dict) else v)
              for k, v in e.params.items()}
    return json.dumps([arm, int(seed), params], sort_keys=True)


def run_points(exps: list[Experiment], notes: list[str] | None = None) -> list[dict]:
    """One row per experiment, arm, seed and checkpoint (step > 0): target and prior accuracy, forgetting and every
    predictor (means over capabilities, from score-dcv's `checkpoints`). A run that an earlier experiment already
    holds (same arm, seed and params: the baseline commit at the learning rate of one experiment, with fewer seeds)
    is counted once, there; `notes` gets a line for each one left out."""
    rows, seen = [], {}
    for e in exps:
        score = {(p["arm"], p["seed"], p["step"]): p for p in e.score["checkpoints"]}
        for arm, a in sorted(e.forgetting["arms"].items()):
            for seed, v in sorted(a["seeds"].items(), key=lambda kv: int(kv[0])):
                key = run_key(e, arm, seed)
                if key in seen:
                    if notes is not None:
                        notes.append(f"{e.name}/{arm}/seed-{seed}: the same run as {seen[key]}/{arm}/seed-{seed} "
                                     f"(same params and seed), counted once")
                    continue
                seen[key] = e.name
                for c in v["checkpoints"]:
                    if c["step"] == 0:
                        continue
                    sp = score.get((arm, int(seed), c["step"]), {})
                    rows.append({"experiment": e.name, "arm": arm, "seed": int(seed), "step": c["step"],
                                 "learning_rate": learning_rate(e, arm), "run": f"{e.name}/{arm}/seed-{seed}",
                                 "target_accuracy": c["target_accuracy"], "prior_accuracy": c["prior_accuracy"],
                                 "forgetting": c["forgetting"], "forward_kl": c["forward_kl"],
                                 "param_distance": c.get("param_distance"), "cv": sp.get("cv"),
                                 "logit_diff_drop": sp.get("logit_diff_drop"), "final": c is v["checkpoints"][-1]})
    return rows


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto frontier (maximise both coordinates): the points no other point matches or beats in both, by
    increasing first coordinate."""
    best, out = float("-inf"), []
    for x, y in sorted(set(points), key=lambda p: (-p[0], -p[1])):
        if y > best:
            out.append((x, y))
            best = y
    return sorted(out)


def best_prior_at(front: list[tuple[float, float]], level: float) -> float | None:
    """The highest prior accuracy on the frontier among points with target accuracy >= level (None: none reach it)."""
    ys = [y for x, y in front if x >= level - 1e-12]
    return max(ys) if ys else None


def finals(rows: list[dict]) -> list[dict]:
    """Per experiment and arm, each run's last checkpoint: mean and SD over seeds of target and prior accuracy (the
    end points RL's Razor compares at each learning rate)."""
    from dcv.stats import mean, sd

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["final"]:
            groups.setdefault((r["experiment"], r["arm"]), []).append(r)
    out = []
    for (e, a), last in groups.items():  # rows come by experiment, then arm in order
        stats = {}
        for k in ("target_accuracy", "prior_accuracy"):
            xs = [r[k] for r in last]
            stats.update({k: mean(xs), f"{k}_sd": sd(xs) if len(xs) > 1 else None})
        out.append({"experiment": e, "arm": a, "learning_rate": last[0]["learning_rate"], "n_seeds": len(last),
                    "step": max(r["step"] for r in last), **stats})
    return out


def summarize(exps: list[Experiment], n_boot: int, seed: int, n_levels: int = 5,
              notes: list[str] | None = None) -> dict:
    import numpy as np

    from dcv.scoring.predictors import analyse

    rows = run_points(exps, notes)
    arms = sorted({r["arm"] for r in rows})
    used = {r["experiment"] for r in rows}
    base = [(e.forgetting["base"]["target_accuracy"], e.forgetting["base"]["prior_accuracy"]) for e in exps]
    fronts = {a: frontier([(r["target_accuracy"], r["prior_accuracy"]) for r in rows if r["arm"] == a] + base[:1])
              for a in arms}
    top = min(max(x for x, _ in fronts[a]) for a in arms) if arms else float("nan")
    lo = base[0][0] if base else float("nan")
    levels = [round(lo + (top - lo) * (i + 1) / n_levels, 6) for i in range(n_levels)] if top > lo else []
    return {
        "experiments": [{"name": e.name, "rev": e.rev, "learning_rate": {a: learning_rate(e, a) for a in arms},
                         "seeds": e.score.get("seeds")} for e in exps if e.name in used],
        "arms": arms, "n_runs": len({r["run"] for r in rows}),
        "runs_per_arm": {a: len({r["run"] for r in rows if r["arm"] == a}) for a in arms},
        "base": {"target_accuracy": base[0][0], "prior_accuracy": base[0][1]} if base else None,
        "frontier": {a: [list(p) for p in fronts[a]] for a in arms},
        "best_prior_accuracy": [{"target_accuracy": lv, **{a: best_prior_at(fronts[a], lv) for a in arms}}
                                for lv in levels],
        "finals": finals(rows),
        "predictors": analyse({"model": rows}, arms, n_boot, np.random.default_rng(seed))["model"],
        "rows": rows,
    }


def _mean_sd(m: float, sd: float | None) -> str:
    from dcv.report.stats import fmt

    return fmt(m) + ("" if sd is None else f" ± {fmt(sd)}")


def write_report(summary: dict, out: Path, notes: list[str]) -> Path:
    from dcv import io
    from dcv.report import figures
    from dcv.report.document import _r2_table, _table
    from dcv.report.stats import fmt

    arms = summary["arms"]
    plt = figures._plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, a in enumerate(arms):
        pts = [(r["target_accuracy"], r["prior_accuracy"]) for r in summary["rows"] if r["arm"] == a]
        ax.scatter(*zip(*pts), s=8, alpha=0.3, color=figures.color(a, i))
        fx, fy = zip(*summary["frontier"][a])
        ax.step(fx, fy, where="post", color=figures.color(a, i), label=f"{a.upper()} frontier")
    if summary["base"]:
        ax.scatter([summary["base"]["target_accuracy"]], [summary["base"]["prior_accuracy"]], marker="*", s=120,
                   color=figures.color("base"), zorder=5, label="base")
    ax.set_xlabel("target eval accuracy")
    ax.set_ylabel("prior-capability accuracy (mean)")
    ax.legend(fontsize=7)
    figures.save(fig, out / "pareto.png")
    cols = ["experiment", "arm", "seed", "step", "learning_rate", "target_accuracy", "prior_accuracy", "forgetting",
            "forward_kl", "param_distance", "cv", "logit_diff_drop"]
    io.write_csv(out / "runs.csv", cols, [{k: r[k] for k in cols} for r in summary["rows"]])
    exps = summary["experiments"]
    md = ["# The Pareto sweep", "",
          f"Generated by `dcv sweep report` from {len(exps)} DVC experiments ({summary['n_runs']} runs: "
          + ", ".join(f"{a.upper()} {n}" for a, n in summary["runs_per_arm"].items())
          + "); every number is read from each experiment's `metrics/evaluate-forgetting.json` and "
            "`metrics/score-dcv.json`.", "",
          _table(["experiment", "commit"] + [f"lr {a.upper()}" for a in arms] + ["seeds"],
                 [[e["name"], e["rev"] if e["rev"] == "workspace" else e["rev"][:7]] + [str(e["learning_rate"][a]) for a in arms]
                  + [", ".join(str(s) for s in e["seeds"] or [])] for e in exps]), "",
          "![Target accuracy against prior accuracy over the sweep](pareto.png)", "",
          "*Every checkpoint of every run (dots) and each arm's Pareto frontier (line: the best prior accuracy kept "
          "at each target accuracy); the base (star). Up and right is better.*", "",
          _table(["target accuracy ≥"] + [f"best prior accuracy {a.upper()}" for a in arms],
                 [[fmt(lv["target_accuracy"])] + [fmt(lv[a]) for a in arms] for lv in summary["best_prior_accuracy"]]),
          "", "*Read off each arm's frontier: of the checkpoints that reach the target accuracy, the one that kept the "
              "most prior accuracy.*", "",
          "## Where each run ends", "",
          _table(["arm", "learning rate", "experiment", "seeds", "step", "target accuracy", "prior accuracy"],
                 [[f["arm"].upper(), str(f["learning_rate"]), f["experiment"], str(f["n_seeds"]), str(f["step"]),
                   _mean_sd(f["target_accuracy"], f["target_accuracy_sd"]),
                   _mean_sd(f["prior_accuracy"], f["prior_accuracy_sd"])]
                  for f in sorted(summary["finals"], key=lambda f: (f["arm"], f["learning_rate"] or 0))]), "",
          "*Each run's last checkpoint, mean ± SD over seeds.*", "",
          "## What predicts forgetting over the sweep", "",
          _r2_table(summary["predictors"], arms, "model"), "",
          "*R² of forgetting against each predictor over every checkpoint of every run of the sweep; 95% intervals "
          "resample whole runs (experiment, arm, seed) within each arm.*", ""]
    if notes:
        md += ["## Left out", ""] + [f"- {n}" for n in notes] + [""]
    io.write_text(out / "report.md", "\n".join(md))
    io.write_json(out / "summary.json", io.json_safe({k: v for k, v in summary.items() if k != "rows"}))
    return out / "report.md"


def report(root: Path, out: Path, exp_json: str | None, all_commits: bool, n_boot: int, seed: int) -> Path:
    if exp_json:
        show = json.loads(Path(exp_json).read_text(encoding="utf-8"))
    else:
        cmd = ["dvc", "exp", "show", "--json"] + (["-A"] if all_commits else [])
        r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if r.returncode != 0:
            raise DcvError(f"dvc exp show: {(r.stderr or r.stdout).strip()[-300:]}")
        show = json.loads(r.stdout)
    from dcv import io

    exps, notes = experiments(show, git_reader(root))
    if not exps:
        raise DcvError("dvc exp show: no experiment with metrics/evaluate-forgetting.json and metrics/score-dcv.json "
                       "(run the sweep first: dcv sweep queue, dvc queue start)")
    summary = summarize(exps, n_boot, seed, notes=notes)
    with io.atomic_dir(out) as d:
        write_report(summary, d, notes)
    return out / "report.md"
