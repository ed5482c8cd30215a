"""`dcv profile apply`: a profile's overrides merged into params.yaml with its comments kept, validated as the
stages validate, refused (file unchanged) on a key params.yaml lacks or an invalid result."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import REPO

SCIKNOWEVAL = REPO.parent / "shared" / "data" / "sciknoweval-chem-l3"


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_study_profile_applies_keeps_comments_and_validates(project: Path):
    if not SCIKNOWEVAL.is_dir():
        pytest.skip("../shared/data/sciknoweval-chem-l3 not present")
    before = (project / "params.yaml").read_text()
    r = _invoke("profile", "apply", "study", "-S", f"data.target.path={SCIKNOWEVAL}")
    assert r.exit_code == 0, r.output
    assert "profile study: set" in r.output and "rl.loss_type" in r.output
    text = (project / "params.yaml").read_text()
    p, prof = yaml.safe_load(text), yaml.safe_load((project / "profiles/study.yaml").read_text())
    assert p["base"]["hf"]["model"] == prof["base"]["hf"]["model"] == "Qwen/Qwen2.5-3B-Instruct"
    assert (p["rl"]["loss_type"], p["rl"]["beta"], p["data"]["target"]["chat"]) == ("dr_grpo", 0.0, True)
    assert p["data"]["target"]["path"] == str(SCIKNOWEVAL)
    assert p["base"]["train"] == yaml.safe_load(before)["base"]["train"]  # keys the profile leaves alone
    kept = [line for line in before.splitlines() if line.lstrip().startswith("#")]
    assert kept and all(line in text for line in kept)  # every full-line comment survives
    from stages.params import load_params

    load_params(project / "params.yaml")


def test_study_profile_applies_with_the_hub_source(project: Path):
    """The README's hub variant: source sciknoweval-hub with path null passes the params checks (the cached file is
    read by prepare-data; tests/test_sciknoweval.py reads one)."""
    r = _invoke("profile", "apply", "study", "-S", "data.target.source=sciknoweval-hub", "-S", "data.target.path=null")
    assert r.exit_code == 0, r.output
    t = yaml.safe_load((project / "params.yaml").read_text())["data"]["target"]
    assert (t["source"], t["path"], t["revision"]) == ("sciknoweval-hub", None, None)


@pytest.mark.parametrize("args,needle", [
    (["profile", "apply", "nope"], "profiles/nope.yaml: no such profile (there are: study)"),
    (["profile", "apply", "study", "-S", "rl.los_type=grpo"], "-S rl.los_type=grpo: rl.los_type: not a key of params.yaml"),
    (["profile", "apply", "study"], "params.yaml with profile study: data.target.path: directory not found"),
    (["profile", "apply", "study", "-S", "data.target.path=.", "-S", "rl.beta=-1"], "rl.beta"),
])
def test_bad_profile_or_result_is_one_line_and_leaves_params(project: Path, args, needle):
    before = (project / "params.yaml").read_bytes()
    r = _invoke(*args)
    assert r.exit_code == 2, r.output
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], r.output
    assert (project / "params.yaml").read_bytes() == before
    assert sorted(p.name for p in project.iterdir()) == ["configs", "params.yaml", "profiles"]


def test_a_profile_key_params_yaml_lacks_is_named(project: Path):
    (project / "profiles/typo.yaml").write_text("rl:\n  num_generation: 4\n")
    r = _invoke("profile", "apply", "typo")
    assert r.exit_code == 2 and "profiles/typo.yaml: rl.num_generation: not a key of params.yaml" in r.output
