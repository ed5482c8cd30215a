"""Bad input and interrupted runs, end to end: each case through the real CLI, timed, checked to leave nothing.

    python bench/bad_input.py [--only SUBSTRING] [--keep DIR]

Builds a tiny project in a temporary directory (the tests' tiny params; `prepare-data` and `base` run once), then
runs every case in a fresh copy of it, as a subprocess (`python -m stages.cli ...`, offline, its own MLflow store
and TMPDIR), and prints a markdown table: the case, the command, the exit code, the seconds from start to exit (for
signals: from the signal) until the message is said and until the process is gone (Python's teardown of torch,
transformers and MLflow takes another 1-3 s), whether anything was written (outs, MLflow runs, temporaries) and the
message (the last line of the output). Timings include Python's and torch's imports (about 2 s) and are as noisy
as the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import TINY, deep_update  # noqa: E402  (the tests' tiny params: one definition)

SEED_OVER = 2**32
BUDGET = {a: {"max_steps": 4, "save_every": 2} for a in ("sft", "rl", "protect", "rl_sft")}
SCIKNOWEVAL_ROW = {"question": "Which reagent converts a primary alcohol to an aldehyde without over-oxidation?",
                   "type": "mcq-4-choices", "choices": {"text": ["PCC", "KMnO4", "CrO3/H2SO4", "HNO3"],
                                                        "label": ["A", "B", "C", "D"]}, "answerKey": "A",
                   "prompt": {"default": "Answer the chemistry question with the letter of the right option."}}


@dataclass
class Case:
    cls: str  # the issue's class: 1 silent defaults ... 8 paths
    name: str
    args: list[str]  # after `dcv`
    edit: dict | None = None  # deep update of the tiny params
    setup: Callable[[Path], None] | None = None  # anything else done to the project copy before the run
    fresh: bool = False  # an empty project (params only) instead of the built one
    env: dict = field(default_factory=dict)
    signal: int | None = None  # sent once pretraining steps
    concurrent: bool = False  # run while another `dcv stage base` of the same project pretrains
    expect: int = 2


# ----------------------------------------------------------------------------------------------------- setups


def params_text(fn: Callable[[str], str]):
    return lambda d: (d / "params.yaml").write_text(fn((d / "params.yaml").read_text()))


def params_dict(fn: Callable[[dict], None]):
    def setup(d: Path) -> None:
        p = yaml.safe_load((d / "params.yaml").read_text())
        fn(p)
        (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return setup


def file_text(rel: str, fn: Callable[[str], str]):
    def setup(d: Path) -> None:
        f = d / rel
        f.write_text(fn(f.read_text()))
    return setup


def chem_dir(rows: list[dict], name: str = "reagents"):
    def setup(d: Path) -> None:
        (d / "chem").mkdir()
        (d / "chem" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return setup


def both(*setups):
    return lambda d: [s(d) for s in setups]


def long_pretraining(d: Path) -> None:
    shutil.rmtree(d / "models", ignore_errors=True)
    (d / "metrics/base.json").unlink(missing_ok=True)


def stale_run(d: Path) -> None:
    """A RUNNING run of stage base whose process is gone (as a SIGKILL leaves it), with a RUNNING child run."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    code = ("import sys, os, mlflow; c = mlflow.tracking.MlflowClient(sys.argv[1]); "
            "e = c.get_experiment_by_name('dcv-test').experiment_id; "
            "t = {'dcv.stage': 'base', 'dcv.pid': sys.argv[2], 'dcv.host': os.uname().nodename}; "
            "r = c.create_run(e, tags=t).info.run_id; c.create_run(e, tags={**t, 'mlflow.parentRunId': r})")
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{d / 'mlflow.db'}", str(dead.pid)], check=True,
                   capture_output=True)


SHARED = REPO.parent / "shared/data/sciknoweval-chem-l3"
LONG = {"base": {"train": {"steps": 4000, "log_every": 10, "eval_every": 4000}}}

CASES = [
    # 1. silent defaults: every section and key required
    Case("1", "empty params.yaml", ["stage", "base"], setup=lambda d: (d / "params.yaml").write_text("")),
    Case("1", "section `data` deleted", ["stage", "prepare-data"], setup=params_dict(lambda p: p.pop("data")), fresh=True),
    Case("1", "`base.train.steps` deleted", ["stage", "base"], setup=params_dict(lambda p: p["base"]["train"].pop("steps"))),
    Case("1", "`common.torch_threads` deleted", ["stage", "base"], setup=params_dict(lambda p: p["common"].pop("torch_threads"))),
    Case("1", "`common.torch_threads` deleted, `dcv check`", ["check"], setup=params_dict(lambda p: p["common"].pop("torch_threads"))),
    Case("1", "`base:` written empty", ["stage", "base"], setup=params_dict(lambda p: p.update(base=None))),
    Case("1", "`circuits.validate` deleted (an aliased key)", ["stage", "extract-circuits"],
         setup=params_dict(lambda p: p["circuits"].pop("validate"))),
    Case("1", "a key written twice", ["check"], setup=params_text(lambda t: t.replace("base:\n", "base:\n  seed: 1\n", 1))),
    Case("1", "`base.train.lr` misspelt `lrr`", ["stage", "base"],
         setup=params_dict(lambda p: p["base"]["train"].update(lrr=p["base"]["train"].pop("lr")))),
    Case("1", "unknown key `base.train.stepz`", ["stage", "base"], {"base": {"train": {"stepz": 10}}}),
    Case("1", "wrong type `base.train.steps: many`", ["stage", "base"], {"base": {"train": {"steps": "many"}}}),
    Case("1", "params.yaml not UTF-8", ["stage", "base"],
         setup=lambda d: (d / "params.yaml").write_bytes((d / "params.yaml").read_bytes().replace(b"kind: toy", b"kind: t\xffy"))),
    Case("1", "invalid YAML", ["stage", "base"], setup=params_text(lambda t: t + "oops: [1, 2\n")),
    Case("1", "params file missing", ["stage", "base", "--params", "nope.yaml"]),
    # 2. the right key named, before any run, messages whole
    Case("2", "`data.tokenizer` an unknown hub id (offline)", ["stage", "prepare-data"],
         {"data": {"tokenizer": "nobody/no-such-tokenizer"}, "base": {"kind": "hf", "hf": {"model": "nobody/no-such-model"}}},
         fresh=True),
    Case("2", "`data.tokenizer` a missing directory", ["stage", "prepare-data"], {"data": {"tokenizer": "./no-such-tok"}},
         fresh=True),
    Case("2", "`base.hf.model` an unknown hub id (offline)", ["stage", "base"],
         {"base": {"kind": "hf", "hf": {"model": "nobody/no-such-model"}}}),
    Case("2", "store path of 400 characters (message whole)", ["stage", "prepare-data"], fresh=True,
         env={"MLFLOW_TRACKING_URI": "sqlite:////nonexistent-" + "d" * 200 + "/" + "e" * 200 + "/mlflow.db"}),
    # 3. cross-field checks before compute
    Case("3", "heads do not divide the width", ["stage", "base"],
         {"base": {"model": {"hidden_size": 32, "num_attention_heads": 3, "num_key_value_heads": 1}}}),
    Case("3", "kv heads do not divide the heads", ["stage", "base"], {"base": {"model": {"num_key_value_heads": 3}}}),
    Case("3", "odd head dimension (rotary)", ["stage", "base"],
         {"base": {"model": {"hidden_size": 36, "num_attention_heads": 4, "num_key_value_heads": 2}}}),
    Case("3", "`max_position_embeddings` < corpus lines", ["stage", "base"], {"base": {"model": {"max_position_embeddings": 16}}}),
    Case("3", "`max_position_embeddings` < corpus lines, `dcv check`", ["check"],
         {"base": {"model": {"max_position_embeddings": 16}}}, fresh=True),
    Case("3", "`sft.max_length` leaves no sample", ["stage", "sft"], {**BUDGET, "sft": {**BUDGET["sft"], "max_length": 8}}),
    Case("3", "`protect.max_length` cuts completions", ["stage", "protect"],
         {**BUDGET, "protect": {**BUDGET["protect"], "max_length": 10}}),
    Case("3", "LoRA `target_modules` match nothing", ["stage", "sft"],
         {**BUDGET, "sft": {**BUDGET["sft"], "finetune": "lora", "lora": {"target_modules": ["q_prj"]}}}),
    Case("3", "LoRA `target_modules` not a layer, `dcv check`", ["check"],
         {"rl": {"finetune": "lora", "lora": {"target_modules": ["mlp"]}}}, fresh=True),
    Case("3", "`common.seeds` beyond numpy's range", ["stage", "sft"], {**BUDGET, "common": {"seeds": [SEED_OVER]}}),
    Case("3", "`base.seed` beyond numpy's range", ["stage", "base"], {"base": {"seed": SEED_OVER}}),
    Case("3", "`dcv.seed` beyond numpy's range", ["stage", "score-dcv"], {"dcv": {"seed": SEED_OVER}}),
    Case("3", "`common.device: cuda` without CUDA", ["stage", "base"], {"common": {"device": "cuda"}}),
    Case("3", "arms share no checkpoint step", ["check"],
         {"sft": {"max_steps": 10, "save_every": 5}, "protect": {"max_steps": 10, "save_every": 5},
          "rl": {"match_budget_of": None, "max_steps": 12, "save_every": 12}}, fresh=True),
    Case("3", "`save_every` > `max_steps`", ["stage", "sft"], {"sft": {"max_steps": 4, "save_every": 8}}),
    Case("3", "GRPO batch not a multiple of the group", ["stage", "rl"],
         {**BUDGET, "rl": {**BUDGET["rl"], "num_generations": 3}}),
    Case("3", "budgets differ under `match_budget_of`", ["check"], {"sft": {"max_steps": 10, "save_every": 5}}, fresh=True),
    Case("3", "toy target asks more rows than exist", ["stage", "prepare-data"], {"data": {"target": {"n_train": 1_000_000}}},
         fresh=True),
    Case("3", "`dcv.pairs` names an arm not in `common.arms`", ["stage", "score-dcv"], {"common": {"arms": ["sft", "rl"]}}),
    Case("3", "`common.torch_threads: 512` on 2 cores (accepted)", ["check"], {"common": {"torch_threads": 512}},
         fresh=True, expect=0),
    # 4. data errors: before the run, with a place
    Case("4", "64 probe pairs, 38 exist", ["stage", "prepare-data"], {"data": {"probes": {"n_pairs": 64}}}, fresh=True),
    Case("4", "64 validation pairs, 50 exist", ["stage", "prepare-data"], {"data": {"n_validation": 64}}, fresh=True),
    Case("4", "SciKnowEval rows, toy tokenizer (<unk>)", ["stage", "prepare-data"],
         {"data": {"target": {"source": "sciknoweval", "path": "chem", "n_eval": 5}}}, setup=chem_dir([SCIKNOWEVAL_ROW] * 30),
         fresh=True),
    *([Case("4", "shared SciKnowEval chem L3, toy tokenizer", ["stage", "prepare-data"],
            {"data": {"target": {"source": "sciknoweval", "path": str(SHARED), "n_eval": 50}}}, fresh=True)]
      if SHARED.is_dir() else []),
    Case("4", "SciKnowEval directory missing", ["stage", "prepare-data"],
         {"data": {"target": {"source": "sciknoweval", "path": "no/such/dir"}}}, fresh=True),
    Case("4", "SciKnowEval row without `answerKey`", ["stage", "prepare-data"],
         {"data": {"target": {"source": "sciknoweval", "path": "chem", "n_eval": 1}}},
         setup=chem_dir([SCIKNOWEVAL_ROW, {k: v for k, v in SCIKNOWEVAL_ROW.items() if k != "answerKey"}]), fresh=True),
    Case("4", "SciKnowEval `n_eval` >= rows", ["stage", "prepare-data"],
         {"data": {"target": {"source": "sciknoweval", "path": "chem", "n_eval": 30}}}, setup=chem_dir([SCIKNOWEVAL_ROW] * 3),
         fresh=True),
    Case("4", "validation JSONL line broken", ["stage", "base"],
         setup=file_text("data/prepared/validation/ioi.jsonl", lambda t: t.replace("\n", "\n{oops\n", 1))),
    Case("4", "target eval row without a prompt", ["stage", "base"],
         setup=file_text("data/prepared/target/eval.jsonl", lambda t: t.split("\n", 1)[0] + '\n{"answer": "A"}\n')),
    Case("4", "corpus empty", ["stage", "base"], setup=file_text("data/prepared/corpus/train.txt", lambda t: "")),
    Case("4", "tokenizer.json truncated", ["stage", "base"],
         setup=file_text("data/prepared/tokenizer/tokenizer.json", lambda t: t[: len(t) // 2])),
    Case("4", "target train answer not an option", ["stage", "sft"], BUDGET,
         setup=file_text("data/prepared/target/train.jsonl", lambda t: t.replace('"answer": "', '"answer": "Z', 1))),
    Case("4", "models/base missing", ["stage", "sft"], BUDGET, setup=lambda d: shutil.rmtree(d / "models")),
    Case("4", "no probe sets", ["stage", "evaluate-forgetting"], setup=lambda d: shutil.rmtree(d / "data/prepared/probes")),
    # 5. interrupted runs
    Case("5", "SIGTERM mid-pretraining", ["stage", "base"], LONG, setup=long_pretraining, signal=signal.SIGTERM, expect=143),
    Case("5", "SIGINT mid-pretraining", ["stage", "base"], LONG, setup=long_pretraining, signal=signal.SIGINT, expect=130),
    Case("5", "second `dcv stage base` while one runs", ["stage", "base"], LONG, setup=long_pretraining, concurrent=True),
    Case("5", "stale RUNNING run and child (pid gone): the next run closes them", ["stage", "base"],
         {"base": {"train": {"steps": 10, "log_every": 5, "eval_every": 10}}}, setup=stale_run, expect=0),
    # 6. the store's own reason
    Case("6", "`file:` tracking URI", ["stage", "prepare-data"], fresh=True, env={"MLFLOW_TRACKING_URI": "FILE_URI"}),
    Case("6", "`file:` tracking URI, `dcv check`", ["check"], fresh=True, env={"MLFLOW_TRACKING_URI": "FILE_URI"}),
    Case("6", "http store unreachable", ["stage", "prepare-data"], fresh=True,
         env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}),
    Case("6", "sqlite store in a missing directory", ["stage", "prepare-data"], fresh=True,
         env={"MLFLOW_TRACKING_URI": "sqlite:////nonexistent-dir/x/mlflow.db"}),
    # 8. paths
    Case("8", "`--model /nonexistent`", ["stage", "extract-circuits", "--model", "/nonexistent"]),
    Case("8", "`--model` a file", ["stage", "extract-circuits", "--model", "params.yaml"]),
    Case("8", "`--model` a directory without config.json", ["stage", "extract-circuits", "--model", "data"]),
    Case("8", "`--base /nonexistent`", ["stage", "extract-circuits", "--model", "models/base", "--base", "/nonexistent"]),
    Case("8", "`--capability telepathy`", ["stage", "extract-circuits", "--model", "models/base", "--capability", "telepathy"]),
    Case("8", "`--probes` a missing file", ["stage", "extract-circuits", "--model", "models/base", "--probes", "nope.jsonl"]),
]


# ------------------------------------------------------------------------------------------------------ running


def write_params(path: Path, edit: dict | None) -> None:
    p = deep_update(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    if edit:
        deep_update(p, json.loads(json.dumps(edit)))
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def env_for(d: Path, extra: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", "TMPDIR": str(d.parent / "tmp")}
    env.pop("MLFLOW_ALLOW_FILE_STORE", None)
    env.update({k: (d / "mlruns").as_uri() if v == "FILE_URI" else v for k, v in extra.items()})
    return env


def dcv(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def build(d: Path) -> None:
    d.mkdir(parents=True)
    write_params(d / "params.yaml", None)
    (d.parent / "tmp").mkdir(exist_ok=True)
    for stage in ("prepare-data", "base"):
        p = dcv(["stage", stage], d, env_for(d, {}))
        out, _ = p.communicate(timeout=900)
        if p.returncode:
            raise SystemExit(f"building the tiny project failed at {stage}:\n{out}")


def snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))}


def runs(d: Path) -> dict[str, str]:
    """run id -> status of every MLflow run in the project's store."""
    db = d / "mlflow.db"
    if not db.exists():
        return {}
    code = ("import sys, json, mlflow; c = mlflow.tracking.MlflowClient(sys.argv[1]); "
            "print(json.dumps({r.info.run_id: r.info.status for r in c.search_runs([e.experiment_id for e in "
            "c.search_experiments()])}))")
    out = subprocess.run([sys.executable, "-c", code, f"sqlite:///{db}"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_case(c: Case, built: Path, work: Path) -> dict:
    d = work / "project"
    if c.fresh:
        d.mkdir(parents=True)
    else:
        shutil.copytree(built, d)
    tmp = work / "tmp"
    tmp.mkdir()
    write_params(d / "params.yaml", c.edit)
    if c.setup:
        c.setup(d)
    env = env_for(d, c.env)
    first = None
    if c.concurrent:  # the other run first; what it writes is not this case's
        first = dcv(c.args, d, env)
        seen = ""
        while "it/s" not in seen:
            seen += first.stdout.read(64) or "."
    runs_before = runs(d)
    before = snapshot(d)
    t0 = time.perf_counter()
    proc = dcv(c.args, d, env)
    out, said = "", None
    if c.signal is not None:
        while "pretrain:" not in out or "it/s" not in out:  # tqdm shows the loop is stepping
            chunk = proc.stdout.read(64)
            if not chunk:
                break
            out += chunk
        t0 = time.perf_counter()
        proc.send_signal(c.signal)
    for line in iter(proc.stdout.readline, ""):  # the time the message is said, and the time the process is gone
        out += line
        if line.strip():
            said = time.perf_counter() - t0  # of the last line: the message
    proc.wait(timeout=900)
    seconds = time.perf_counter() - t0
    after, runs_after = snapshot(d), runs(d)
    if first is not None:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=300)
    written = sorted(k for k in after if (k not in before or after[k] != before[k])
                     and not (first is not None and k == "mlflow.db"))  # the other run logs as it goes
    new_runs = {k: v for k, v in runs_after.items() if k not in runs_before}
    closed = [v for k, v in runs_after.items() if runs_before.get(k) == "RUNNING" and v != "RUNNING"
              and first is None]
    temps = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_"))
    left = []
    if written:
        left.append(f"files: {', '.join(written[:3])}{' ...' if len(written) > 3 else ''}")
    if new_runs:
        left.append("MLflow runs: " + ", ".join(sorted(new_runs.values())))
    if closed:
        left.append("stale runs now " + ", ".join(closed))
    if temps:
        left.append(f"temporaries: {', '.join(temps)}")
    lines = [l for l in out.splitlines() if l.strip()]
    return {"case": c, "exit": proc.returncode, "seconds": seconds, "said": said, "left": "; ".join(left) or "nothing",
            "message": lines[-1] if lines else "", "n_lines": len(lines)}


def md(s: str) -> str:
    return s.replace("|", "\\|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="run only the cases whose name holds this")
    ap.add_argument("--keep", default=None, help="build and keep the work here instead of a temporary directory")
    a = ap.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="dcv-bad-input-"))
    try:
        t = time.perf_counter()
        build(root / "built")
        print(f"tiny project built in {time.perf_counter() - t:.0f} s ({root})", file=sys.stderr, flush=True)
        cases = [c for c in CASES if a.only is None or a.only in c.name]
        results = []
        for i, c in enumerate(cases, 1):
            r = run_case(c, root / "built", root / f"case-{i:02d}")
            results.append(r)
            ok = "ok" if r["exit"] == c.expect else f"UNEXPECTED (wanted {c.expect})"
            print(f"[{i}/{len(cases)}] {c.name}: exit {r['exit']} {ok}, {r['seconds']:.1f} s", file=sys.stderr, flush=True)
        print("| # | class | case | command | exit | s to message | s to exit | left behind | message |")
        print("| ---: | :---: | --- | --- | ---: | ---: | ---: | --- | --- |")
        for i, r in enumerate(results, 1):
            c = r["case"]
            flag = "" if r["exit"] == c.expect else f" (wanted {c.expect})"
            said = "" if r["said"] is None else f"{r['said']:.1f}"
            print(f"| {i} | {c.cls} | {md(c.name)} | `dcv {md(' '.join(c.args))}` | {r['exit']}{flag} | {said} | "
                  f"{r['seconds']:.1f} | {md(r['left'])} | {md(r['message'])} |")
        bad = [r for r in results if r["exit"] != r["case"].expect or (r["case"].expect == 2 and r["left"] != "nothing")]
        said = sorted(r["said"] for r in results if r["case"].signal is None and r["said"] is not None)
        summary = f"; to the message: median {said[len(said) // 2]:.1f} s, slowest {said[-1]:.1f} s" if said else ""
        print(f"\n{len(results)} cases, {len(bad)} unexpected{summary}", file=sys.stderr)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
