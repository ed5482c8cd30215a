"""dvc.yaml cannot drift from the code: every stage's code deps cover the code it runs (its import closure, see
tests/deps.py), and the params it tracks are exactly the keys the stage reads (the stage's declared keys, which
`stages.params.View` enforces at run time)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.deps import closure, covered


def stage_entries() -> dict[str, tuple[list[str], list[str]]]:
    """Stage name -> (modules it runs from, params keys it declares)."""
    from dcv.arms import REGISTRY
    from stages import arms, base, evaluate_forgetting, extract_circuits, prepare_data, report, score_dcv

    out = {"prepare-data": (["stages.prepare_data"], prepare_data.PARAMS), "base": (["stages.base"], base.PARAMS),
           "extract-circuits": (["stages.extract_circuits"], extract_circuits.PARAMS),
           "evaluate-forgetting": (["stages.evaluate_forgetting"], evaluate_forgetting.PARAMS),
           "score-dcv": (["stages.score_dcv"], score_dcv.PARAMS), "report": (["stages.report"], report.PARAMS)}
    for name, arm in REGISTRY.items():
        out[name] = (["stages.arms", arm.train.__module__, arm.config.__module__], arms.params_keys(name))
    return out


def uncovered(root: Path, dvc: dict) -> dict[str, list[str]]:
    """Per stage, the files of its closure that none of its dvc.yaml deps covers."""
    out = {}
    for name, (entries, _) in stage_entries().items():
        deps = dvc["stages"][name].get("deps", [])
        missing = sorted(p.relative_to(root).as_posix() for p in closure(root, entries) if not covered(p, deps, root))
        if missing:
            out[name] = missing
    return out


def test_every_stage_is_known_and_its_code_deps_cover_its_imports():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert set(dvc["stages"]) == set(stage_entries())
    assert uncovered(REPO, dvc) == {}
    for name, st in dvc["stages"].items():  # every listed code dep exists (a renamed module is not silently dropped)
        for d in st.get("deps", []):
            if d.startswith(("dcv", "stages")):
                assert (REPO / d).exists(), (name, d)


def test_an_arm_that_continues_another_depends_on_its_models():
    """An arm whose `init` is another arm trains from that arm's checkpoints: its stage runs after that stage, and
    reruns when those models change."""
    from stages.params import load_params

    dvc, p = yaml.safe_load((REPO / "dvc.yaml").read_text()), load_params(REPO / "params.yaml")
    from dcv.arms import REGISTRY

    inits = {name: getattr(p, name).init for name in REGISTRY}
    assert "sft" in inits.values()  # rl_sft continues sft
    for name, init in inits.items():
        assert f"models/{init}" in dvc["stages"][name]["deps"], name


def test_removing_a_dep_is_caught(tmp_path: Path):
    """The check can fail: a copy of the code whose dvc.yaml lost one dep of score-dcv."""
    for d in ("dcv", "stages"):
        shutil.copytree(REPO / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    dvc["stages"]["score-dcv"]["deps"].remove("dcv/bootstrap.py")
    assert uncovered(tmp_path, dvc) == {"score-dcv": ["dcv/bootstrap.py"]}
    dvc["stages"]["protect"]["deps"] = [d for d in dvc["stages"]["protect"]["deps"] if not d.startswith("dcv/circuits")]
    assert "dcv/circuits/hooks.py" in uncovered(tmp_path, dvc)["protect"]


def test_tracked_params_are_exactly_the_declared_ones():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, (_, keys) in stage_entries().items():
        assert sorted(dvc["stages"][name].get("params", [])) == sorted(keys), name


def test_a_stage_reading_an_undeclared_key_fails_naming_it():
    from stages.params import load_params, view

    v = view(load_params(REPO / "params.yaml"), ["base", "common.seeds"], "base")
    assert v.base.train.steps > 0 and v.common.seeds == [0, 1, 2]
    with pytest.raises(AttributeError, match="stage base reads params key common.device, which it does not declare"):
        v.common.device
    with pytest.raises(AttributeError, match="params key sft"):
        v.sft


def test_params_yaml_equals_the_library_defaults():
    """One source of values: the library's defaults are params.yaml's (and params.yaml writes out every key)."""
    from stages.params import Params, load_params

    assert load_params(REPO / "params.yaml").model_dump(mode="json") == Params().model_dump(mode="json")
