"""Bad params: one line naming the file and the dotted key, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import write_params

CASES = [
    # (edit of the tiny params, expected dotted key in the message)
    ({"base": {"train": {"lr": -1.0}}}, "base.train.lr"),
    ({"base": {"train": {"steps": "many"}}}, "base.train.steps"),
    ({"base": {"train": {"stepz": 10}}}, "base.train.stepz"),
    ({"base": {"kind": "gpt"}}, "base.kind"),
    ({"base": {"model": {"hidden_size": 2}}}, "base.model.hidden_size"),
    ({"base": {"hf": {"trust_remote_code": "yes"}}}, "base.hf.trust_remote_code"),
    ({"common": {"seeds": []}}, "common.seeds"),
    ({"common": {"seeds": [0, 0]}}, "common.seeds"),
    ({"common": {"device": "tpu"}}, "common.device"),
    ({"data": {"capabilities": ["induction", "telepathy"]}}, "data.capabilities"),
    ({"data": {"world": {"heldout_fraction": 1.5}}}, "data.world.heldout_fraction"),
    ({"data": {"probes": {"source": "oracle"}}}, "data.probes.source"),
    ({"data": {"probes": {"source": "templates"}}}, "data.probes.source"),  # templates with the toy tokenizer
    ({"data": {"tokenizer": "some/tok", "probes": {"source": "templates"}}}, "data.capabilities"),  # toy names
    ({"data": {"probes": {"n_pairs": 0}}}, "data.probes.n_pairs"),
    ({"data": {"corpus": {"mix": {"induction": 1.0, "astrology": 1.0}}}}, "data.corpus.mix"),
    ({"data": {"target": {"source": "sciknoweval", "path": "no/such/dir"}}}, "data.target.path"),
    ({"data": {"target": {"source": "sciknoweval"}}}, "data.target"),
    ({"base": {"kind": "hf", "hf": {"model": "./no-such-model"}}}, "base.hf.model"),
    ({"sft": {"lr": 1.0}}, "sft"),
]


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("edit,key", CASES, ids=[k for _, k in CASES])
@pytest.mark.parametrize("stage", ["prepare-data", "base"])
def test_bad_value_is_one_line_naming_file_and_key(workdir: Path, edit, key, stage):
    write_params(workdir / "params.yaml", edit)
    r = _invoke(["stage", stage, "--params", "params.yaml"])
    assert r.exit_code == 2, r.output
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: params.yaml: "), lines[0]
    assert key in lines[0], lines[0]
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]  # nothing written, not even mlflow.db


def test_missing_params_file(workdir: Path):
    r = _invoke(["stage", "base", "--params", "nope.yaml"])
    assert r.exit_code == 2 and "nope.yaml: params file not found" in r.output


def test_invalid_yaml_names_line(workdir: Path):
    (workdir / "params.yaml").write_text("common:\n  seeds: [0, 1\nbase: {}\n")
    r = _invoke(["stage", "prepare-data"])
    assert r.exit_code == 2 and r.output.startswith("error: params.yaml:") and "not valid YAML" in r.output


def test_scientific_notation_is_a_float(workdir: Path):
    from stages.params import load_params

    text = (workdir / "params.yaml").read_text().replace("lr: 0.003", "lr: 1e-3")
    (workdir / "params.yaml").write_text(text)
    assert load_params(workdir / "params.yaml").base.train.lr == pytest.approx(1e-3)


def test_repo_params_are_valid():
    from stages.params import load_params

    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    # Every key the schema knows is written out in params.yaml, so nothing changes silently with a default.
    assert p.model_dump(mode="json") == _fill(raw, p.model_dump(mode="json"))


def _fill(raw, full):
    assert isinstance(raw, dict) and set(raw) == set(full), (sorted(raw), sorted(full))
    return {k: _fill(raw[k], full[k]) if isinstance(full[k], dict) and k != "mix" else raw[k] for k in full}


def test_data_error_names_file_and_line(tmp_path: Path):
    from dcv.errors import DcvError
    from dcv.probes import load_probes

    f = tmp_path / "p.jsonl"
    f.write_text('{"clean": "a", "corrupt": "b", "answer": " c", "distractor": " d"}\n{"clean": "a"}\n')
    with pytest.raises(DcvError, match=r"p\.jsonl:2: .*'corrupt'"):
        load_probes(f)
