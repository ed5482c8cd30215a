"""Where the toy pipeline's time goes: a cold `dvc repro` in a fresh clone, stage by stage, timed.

    python bench/pipeline.py [--repo DIR] [--keep DIR] [--profile STAGE] [--top N] [--set KEY=VALUE ...]

Clones the repository's HEAD (`--repo`, default this one; uncommitted changes are not in it) into a temporary
directory, then runs each stage of dvc.yaml in DAG order with `dvc repro --single-item <stage>` (a cold run: the
clone has no DVC cache), each as its own process, so that its wall time and peak resident memory (the largest
process of the stage, from `wait4`) are its own. Prints a markdown table (seconds, share of the total, peak RSS
per stage), the seconds per seed of every arm (from `metrics/<arm>.json`), per model of the measurement stages
(their `<stage>: <model>: <s> s` lines), and whether a second `dvc repro` runs nothing. `--profile STAGE` runs that
stage under cProfile (the CLI's `DCV_PROFILE` hook) and prints its top functions by cumulative and by own time.
`--set data.corpus.n_lines=1000` edits params.yaml of the clone before the run (a smaller pipeline to try a
change on). Stage output goes to `<clone>/bench-logs/<stage>.log`; keep the clone with `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL_LINE = re.compile(r"^(?P<stage>[a-z-]+): (?P<model>[\w./-]+): (?:.*, )?(?P<s>[0-9.]+) s$")


def stage_order(dvc_yaml: Path) -> list[str]:
    """The stages of dvc.yaml in an order where each comes after the stages whose outs it depends on."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    outs = {name: [str(o if isinstance(o, str) else next(iter(o))) for o in s.get("outs", []) + s.get("metrics", [])]
            for name, s in stages.items()}

    def feeds(dep: str, out: str) -> bool:
        return dep == out or dep.startswith(out.rstrip("/") + "/") or out.startswith(dep.rstrip("/") + "/")

    needs = {name: {o for o in stages if o != name and any(feeds(str(d), out) for d in s.get("deps", [])
                                                         for out in outs[o])}
             for name, s in stages.items()}
    order: list[str] = []
    while len(order) < len(stages):
        ready = [n for n in stages if n not in order and needs[n] <= set(order)]
        if not ready:
            raise SystemExit(f"dvc.yaml: a cycle among {sorted(set(stages) - set(order))}")
        order.append(ready[0])
    return order


def set_params(path: Path, assignments: list[str]) -> None:
    params = yaml.safe_load(path.read_text())
    for a in assignments:
        key, _, value = a.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise SystemExit(f"--set {a}: no key {key} in params.yaml")
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(cmd: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, float, int]:
    """Seconds, peak RSS (MB) of the stage's largest process, exit status."""
    with log.open("w") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, proc.returncode


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=REPO)
    ap.add_argument("--keep", type=Path, help="clone here (kept) instead of a temporary directory")
    ap.add_argument("--profile", metavar="STAGE", help="run this stage under cProfile and print its top functions")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--set", dest="assign", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="dcv-bench-"))
    clone = root / "repo"
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", str(args.repo.resolve()), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    if args.assign:
        set_params(clone / "params.yaml", args.assign)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    # the clone's own code: a `dcv` console script of an editable install would import the installing checkout's
    env["PYTHONPATH"] = str(clone)
    env.pop("DCV_PROFILE", None)
    dvc = [sys.executable, "-m", "dvc"]
    logs = clone / "bench-logs"
    logs.mkdir()
    print(f"# toy pipeline, cold, commit {commit}{' with ' + ' '.join(args.assign) if args.assign else ''}")
    print(f"machine: {machine()}; clone: {clone}\n", flush=True)

    order = stage_order(clone / "dvc.yaml")
    if args.profile and args.profile not in order:
        raise SystemExit(f"--profile {args.profile}: no such stage (stages: {', '.join(order)})")
    check_s, _, rc = run_stage([sys.executable, "-m", "stages.cli", "check"], clone, env, logs / "check.log")
    if rc:
        raise SystemExit(f"dcv check failed ({logs / 'check.log'}):\n{(logs / 'check.log').read_text()}")
    rows = []
    for name in order:
        stage_env = {**env, "DCV_PROFILE": str(logs / f"{name}.prof")} if name == args.profile else env
        seconds, rss, rc = run_stage([*dvc, "repro", "--single-item", name], clone, stage_env, logs / f"{name}.log")
        rows.append((name, seconds, rss))
        print(f"  {name}: {seconds:.1f} s, peak RSS {rss:.0f} MB", flush=True)
        if rc:
            tail = "\n".join((logs / f"{name}.log").read_text().splitlines()[-15:])
            raise SystemExit(f"stage {name} failed (exit {rc}); the end of {logs / (name + '.log')}:\n{tail}")
    total = sum(s for _, s, _ in rows)

    print(f"\n| stage | seconds | share | peak RSS (MB) |\n| --- | ---: | ---: | ---: |")
    for name, seconds, rss in rows:
        print(f"| {name} | {seconds:.1f} | {100 * seconds / total:.1f}% | {rss:.0f} |")
    print(f"| **total** | **{total:.1f}** ({total / 60:.1f} min) | 100% | |")
    print(f"\n(`dcv check` before: {check_s:.1f} s; each stage's seconds include `dvc repro`'s own ~2 s)")

    params = yaml.safe_load((clone / "params.yaml").read_text())
    print("\n## seconds per seed (arms)\n")
    for arm in params["common"]["arms"]:
        m = json.loads((clone / "metrics" / f"{arm}.json").read_text())
        seeds = ", ".join(f"seed {s}: {v['wall_s']:.1f}" for s, v in m["seeds"].items())
        print(f"- {arm}: {seeds} (stage {m['wall_s']:.1f} s, {m['budget']['max_steps']} steps per seed)")
    print("\n## seconds per model (measurement stages)\n")
    for name in order:
        per_model = [m.groupdict() for line in (logs / f"{name}.log").read_text().splitlines()
                     if (m := MODEL_LINE.match(line.strip())) and m["stage"] == name]
        if per_model:
            secs = [float(p["s"]) for p in per_model]
            slowest = max(per_model, key=lambda p: float(p["s"]))
            print(f"- {name}: {len(per_model)} models, {sum(secs):.1f} s in all, mean {sum(secs) / len(secs):.2f} s, "
                  f"slowest {slowest['model']} {float(slowest['s']):.1f} s")

    again = subprocess.run([*dvc, "repro"], cwd=clone, env=env, capture_output=True, text=True)
    ran = [line for line in again.stdout.splitlines() if line.startswith("Running stage")]
    print(f"\nsecond `dvc repro`: {'runs nothing' if not ran and again.returncode == 0 else 'ran ' + '; '.join(ran) or again.stderr[-500:]}")

    if args.profile:
        stats = pstats.Stats(str(logs / f"{args.profile}.prof"))
        for key in ("cumulative", "tottime"):
            print(f"\n## {args.profile}: top {args.top} functions by {key}\n```")
            stats.sort_stats(key).print_stats(args.top)
            print("```")
    if not args.keep:
        print(f"\n(clone left at {clone} for inspection; remove it when done)")


if __name__ == "__main__":
    main()
