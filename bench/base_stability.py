"""Does the toy base reach its capabilities on any CPU? Held-out accuracy of the base for several seeds and threads.

    python bench/base_stability.py [--params params.yaml] [--seeds 0 1 2] [--threads 1 2] [--set KEY=VALUE ...]

Runs stage prepare-data once, then stage base once per (base.seed, common.torch_threads) in a temporary project
(the real CLI, one process at a time), and prints a markdown table of each capability's held-out accuracy
(`metrics/base.json`) with the seconds of each run. Different thread counts use other reduction orders, so a base
that only just reaches a capability on one machine may miss it on another: the issue's bar is >= 0.97 everywhere.
`--set base.train.steps=3000` tries a change of the params (dotted keys, YAML values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BAR = 0.97


def _set(d: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for k in parents:
        d = d[k]
    d[leaf] = value


def _stage(project: Path, name: str, env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "stages.cli", "stage", name], cwd=project, env=env, capture_output=True,
                       text=True)
    if r.returncode:
        sys.exit(f"{name} failed in {project}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    params = yaml.safe_load(args.params.read_text())
    for s in args.set:
        key, _, value = s.partition("=")
        _set(params, key, yaml.safe_load(value))
    root = Path(tempfile.mkdtemp(prefix="dcv-base-stability-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    prepared = root / "prepared"
    prepared.mkdir()
    (prepared / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _stage(prepared, "prepare-data", env)
    print(f"# toy base stability: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{' '.join(args.set) or 'params as given'}\n")
    rows = []
    for seed in args.seeds:
        for threads in args.threads:
            p = root / f"seed-{seed}-threads-{threads}"
            shutil.copytree(prepared, p, ignore=shutil.ignore_patterns("mlflow.db", "mlruns"))
            q = json.loads(json.dumps(params))
            q["base"]["seed"], q["common"]["torch_threads"] = seed, threads
            (p / "params.yaml").write_text(yaml.safe_dump(q, sort_keys=False))
            secs = _stage(p, "base", env)
            caps = json.loads((p / "metrics/base.json").read_text())["capabilities"]
            rows.append((seed, threads, secs, {c: v["accuracy"] for c, v in sorted(caps.items())}))
            print(f"  base.seed {seed}, threads {threads}: {secs:.0f} s, "
                  + ", ".join(f"{c} {a:.2f}" for c, a in rows[-1][3].items()), flush=True)
    caps = list(rows[0][3])
    print("\n| base.seed | threads | " + " | ".join(caps) + " | s |")
    print("| ---: | ---: | " + " | ".join("---:" for _ in caps) + " | ---: |")
    for seed, threads, secs, acc in rows:
        cells = [f"{acc[c]:.2f}" + ("" if acc[c] >= BAR else " ✗") for c in caps]
        print(f"| {seed} | {threads} | " + " | ".join(cells) + f" | {secs:.0f} |")
    low = [(s, t, c, a[c]) for s, t, _, a in rows for c in caps if a[c] < BAR]
    print(f"\n{len(low)} of {len(rows) * len(caps)} below {BAR}"
          + (": " + "; ".join(f"seed {s} threads {t} {c} {v:.2f}" for s, t, c, v in low) if low else ""))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
