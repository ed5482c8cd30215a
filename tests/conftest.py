"""Shared fixtures: a tiny toy world in a temporary repository, with its own MLflow store, all offline."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

# Small enough to pretrain in seconds; the same code path as the default.
TINY = {
    "common": {"seeds": [0], "device": "cpu", "torch_threads": 1, "experiment": "dcv-test"},
    "data": {
        "n_validation": 12,
        "probes": {"n_pairs": 8, "n_protection": 8, "n_discovery": 8, "n_forgetting": 8},
        "world": {"n_known_entities": 12, "n_target_entities": 12, "n_unknown_entities": 4, "n_names": 6, "n_symbols": 10, "modulus": 7},
        "corpus": {"n_lines": 1500},
        "target": {"n_train": 40, "n_eval": 16},
        "target_pairs": {"n_pairs": 4, "n_discovery": 4},
    },
    "base": {
        "model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "max_position_embeddings": 64},
        "train": {"steps": 30, "batch_size": 16, "warmup_steps": 5, "log_every": 10, "eval_every": 15},
    },
    # tests set max_steps / save_every of their own; the default's explicit checkpoint steps would exceed them
    "sft": {"save_steps": None},
    "rl": {"save_steps": None},
    "protect": {"save_steps": None},
    # continues sft's final checkpoint; sft's steps (every 200 of 400 until a test sets its own), so dcv.pairs'
    # [sft, rl_sft] has a common step
    "rl_sft": {"save_steps": None, "init_step": None, "max_steps": 400, "save_every": 200},
}


def deep_update(d: dict, u: dict) -> dict:
    for k, v in u.items():
        d[k] = deep_update(dict(d.get(k) or {}), v) if isinstance(v, dict) else v
    return d


def write_params(path: Path, overrides: dict | None = None) -> Path:
    p = deep_update(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    if overrides:
        deep_update(p, overrides)
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    """An empty project directory with a tiny params.yaml and its own MLflow store."""
    write_params(tmp_path / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_repo(dest: Path, overrides: dict | None = None) -> Path:
    """A git + DVC repository holding a copy of this project's code and dvc.yaml, with tiny params."""
    dest.mkdir(parents=True, exist_ok=True)
    for d in ("dcv", "stages"):
        shutil.copytree(REPO / d, dest / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / f, dest / f)
    shutil.copytree(REPO / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache", "config.local"))
    write_params(dest / "params.yaml", overrides)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def ran_stages(stdout: str) -> set[str]:
    """The stages a `dvc repro` ran, from its output."""
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")}


def run(cmd: list[str], cwd: Path, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", **kw.pop("env", {})}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, **kw)


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory, request) -> Path:
    """A tiny git + DVC repository (`make_repo`, TINY params) after `dvc repro base`: prepare-data and base, built
    once per test session, across pytest-xdist workers (a file lock in their common temporary directory). Tests
    take copies (`copy_repo`); nothing writes into it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # a pytest-xdist worker: the workers share the parent directory
        root = root.parent
    dest, done = root / "built-repo", root / "built-repo.done"
    with FileLock(str(root / "built-repo.lock")):
        if not done.is_file():
            shutil.rmtree(dest, ignore_errors=True)
            make_repo(dest)
            r = run(["dvc", "repro", "base"], dest)
            assert r.returncode == 0, r.stdout + r.stderr
            assert ran_stages(r.stdout) == {"prepare-data", "base"}, r.stdout
            done.touch()
    return dest


def copy_repo(src: Path, dest: Path, overrides: dict | None = None) -> Path:
    """A copy of a built repository (git, DVC cache, outs, dvc.lock) with its own, empty MLflow store (the
    experiment's artifact location in the store is an absolute path into `src`), params rewritten with
    `overrides`; DVC reruns only the stages whose params those touch."""

    def ignore(d: str, names: list[str]) -> set[str]:
        here = Path(d)
        if here == src:
            return {"mlflow.db", "mlartifacts"} & set(names)
        return {"tmp"} & set(names) if here == src / ".dvc" else set()

    shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    if overrides:
        write_params(dest / "params.yaml", overrides)
    return dest
