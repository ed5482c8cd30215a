"""The DVC pipeline end to end on a tiny world: caching, params granularity, determinism, SIGKILL safety.

Slow: these run real `dvc repro` in a temporary git repository.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_repo, make_repo, ran_stages, run

pytestmark = pytest.mark.slow


def _repro(repo: Path, *targets: str) -> str:
    r = run(["dvc", "repro", *targets], repo)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _tree_bytes(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_repro_caches_and_reruns_only_what_changed(built_repo: Path, tmp_path: Path):
    """`built_repo` ran prepare-data and base (checked there); in a copy a second repro runs nothing."""
    repo = copy_repo(built_repo, tmp_path / "repo")
    assert ran_stages(_repro(repo, "base")) == set()  # a second repro runs nothing
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["probes"]["n_pairs"] = 10  # probe-only key: prepare-data reruns, base does not
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(_repro(repo, "base")) == {"prepare-data"}
    assert len((repo / "data/prepared/probes/ioi.jsonl").read_text().splitlines()) == 10
    params["base"]["train"]["lr"] = 0.002  # a base key: only base reruns
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(_repro(repo, "base")) == {"base"}


def test_same_params_and_seed_give_identical_bytes(built_repo: Path, tmp_path: Path):
    a, b = built_repo, make_repo(tmp_path / "b")
    _repro(b, "base")
    assert _tree_bytes(a / "models/base") == _tree_bytes(b / "models/base")
    assert _tree_bytes(a / "data/prepared") == _tree_bytes(b / "data/prepared")
    ma, mb = (json.loads((r / "metrics/base.json").read_text()) for r in (a, b))
    ma.pop("wall_s"), mb.pop("wall_s")  # the one timing figure
    assert ma == mb


def test_sigkill_mid_training_leaves_no_result(built_repo: Path, tmp_path: Path):
    repo = copy_repo(built_repo, tmp_path / "repo", {"base": {"train": {"steps": 4000, "log_every": 10,
                                                                        "eval_every": 4000}}})
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    proc = subprocess.Popen(["dvc", "repro", "base"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = ""
    deadline = time.time() + 240
    while "pretrain:" not in seen or "it/s" not in seen:  # tqdm shows the loop is stepping
        assert time.time() < deadline and proc.poll() is None, seen
        seen += proc.stdout.read(64)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (repo / "models/base").exists() and not (repo / "metrics/base.json").exists()
    assert not list((repo / "models").glob(".tmp-*")) if (repo / "models").exists() else True
    st = run(["dvc", "status", "base"], repo)
    assert "changed outs" in st.stdout or "deleted" in st.stdout or "not in cache" in st.stdout, st.stdout
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["base"]["train"]["steps"] = 20
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(_repro(repo, "base")) == {"base"}
    assert (repo / "models/base/model.safetensors").is_file()
