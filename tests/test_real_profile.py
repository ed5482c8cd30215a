"""The study's profile end to end on CPU, shrunk: the real Qwen tokenizer of ../shared, a tiny random Qwen2 as the
base, real SciKnowEval rows as chat prompts, template probes; every stage through the CLI (no DVC), so that the
real-scale code path runs in CI. Its numbers mean nothing (a random model); that every stage runs and writes its
outputs, and that the chat rows reach the arms, is what it checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import REPO

SHARED = REPO.parent / "shared" / "data"
QWEN, SCIKNOWEVAL = SHARED / "qwen-tokenizer", SHARED / "sciknoweval-chem-l3"

SHRINK = {  # the study's profile, then these: one seed, two steps, tiny probe splits, the tiny model
    "common.seeds": [0], "common.device": "cpu", "common.torch_threads": 1, "common.experiment": "dcv-test",
    "data.capabilities": ["ioi", "mcqa"],  # all six are built and checked by tests/test_templates.py
    "data.n_validation": 12, "data.probes.n_pairs": 8, "data.probes.n_protection": 8, "data.probes.n_discovery": 8,
    "data.probes.n_forgetting": 8, "data.target.subsets": ["molecular_property_calculation", "balancing_chemical_equation"],
    "data.target.n_eval": 16,  # 8 MCQ rows (their target pairs) and 8 filling rows (the equation reward)
    "data.target_pairs.n_pairs": 3, "data.target_pairs.n_discovery": 3,  # the profile's kinds, of the 8 MCQ rows
    "sft.max_steps": 2, "sft.save_every": 1, "sft.save_steps": [1, 2], "sft.per_device_train_batch_size": 2,
    "sft.gradient_accumulation_steps": 1, "sft.max_length": 400, "sft.logging_steps": 1,
    "protect.max_steps": 2, "protect.save_every": 1, "protect.save_steps": [1, 2], "protect.per_device_train_batch_size": 2,
    "protect.gradient_accumulation_steps": 1, "protect.max_length": 400, "protect.logging_steps": 1,
    "protect.protection.batch_size": 4,
    "rl.max_steps": 2, "rl.save_every": 1, "rl.save_steps": [1, 2], "rl.per_device_train_batch_size": 4, "rl.num_generations": 2,
    "rl.gradient_accumulation_steps": 1, "rl.generation_batch_size": 4, "rl.max_completion_length": 4,
    "rl.logging_steps": 1, "rl.n_logged_completions": 2,
    "rl_sft.max_steps": 2, "rl_sft.save_every": 1, "rl_sft.save_steps": [1, 2], "rl_sft.per_device_train_batch_size": 4,
    "rl_sft.num_generations": 2, "rl_sft.gradient_accumulation_steps": 1, "rl_sft.generation_batch_size": 4,
    "rl_sft.max_completion_length": 4, "rl_sft.logging_steps": 1, "rl_sft.n_logged_completions": 2,
    "circuits.batch_size": "auto", "circuits.heads_per_forward": 8,  # auto (the profile's): 64 off CUDA, at most the pairs
    "circuits.dbm_steps": 20,  # the profile's 200 on 9 models was a fifth of this test; its value is the profile's
    "circuits.eap_ig_steps": 2, "circuits.validate": True, "circuits.validate_heads": 4,  # exact on 4 of 8 heads
    "forgetting.eval": {"max_new_tokens": 4, "batch_size": "auto", "kl_samples": 2, "kl_max_new_tokens": 4, "kl_seed": 0},
    "forgetting.lm_eval.enabled": False, "dcv.n_bootstrap": 20, "dcv.n_permutations": 99,
}


def tiny_qwen(directory: Path):
    """A random Qwen2 with the real tokenizer's vocabulary: 2 layers x 4 heads (2 key/value heads)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(QWEN))
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(str(directory))
    tok.save_pretrained(str(directory))


def target_pairs_written(project: Path) -> None:
    """The target task's own pairs (key_swap and molecule_swap, the profile's kinds): the scoring and discovery
    splits only, the chat answer letter without a space."""
    m = json.loads((project / "metrics/prepare-data.json").read_text())
    kinds = ["key_swap", "molecule_swap"]
    assert m["target_pairs"]["kinds"] == kinds and m["target_pairs"]["pairs"] == {"probes": 3, "discovery": 3}
    pairs = [json.loads(l) for split in ("probes", "discovery")
             for l in (project / f"data/prepared/{split}/target.jsonl").read_text().splitlines()]
    assert len(pairs) == 6 and all(p["kind"] in kinds and p["answer"] in ("A", "B", "C", "D") for p in pairs)
    assert {p["kind"] for p in pairs} == set(kinds)  # 5 key swaps, 1 molecule swap of these 16 eval rows
    assert not any((project / f"data/prepared/{s}/target.jsonl").exists() for s in ("validation", "protection",
                                                                                    "forgetting"))


def study_project(project: Path, model: Path, monkeypatch, *sets: str) -> Path:
    """A project at `project` with the study's profile applied, shrunk (SHRINK), the base `model`, then `sets`."""
    project.mkdir()
    for f in ("params.yaml",):
        shutil.copy(REPO / f, project / f)
    for d in ("profiles", "configs"):
        shutil.copytree(REPO / d, project / d)
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    base = [f"data.target.path={SCIKNOWEVAL}", f"data.tokenizer={QWEN}", f"base.hf.model={model}"]
    base += [f"{k}={json.dumps(v)}" for k, v in SHRINK.items()]
    r = CliRunner().invoke(app, ["profile", "apply", "study", *[x for s in (*base, *sets) for x in ("-S", s)]])
    assert r.exit_code == 0, r.output
    return project


needs_shared = pytest.mark.skipif(not (QWEN.is_dir() and SCIKNOWEVAL.is_dir()),
                                  reason="../shared/data (Qwen tokenizer, SciKnowEval rows) not present")


@pytest.fixture(scope="module")
def qwen_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-qwen")
    tiny_qwen(d)
    return d


def _bad_row(d: Path) -> tuple[list[str], list[str]]:
    """Row 3 of one SciKnowEval file without its answer."""
    chem = d / "chem"
    shutil.copytree(SCIKNOWEVAL, chem, ignore=shutil.ignore_patterns("*.md"))
    f = chem / "reaction_prediction.jsonl"
    lines = f.read_text().splitlines()
    row = json.loads(lines[2])
    row.pop("answerKey", None), row.pop("answer", None)
    f.write_text("\n".join([*lines[:2], json.dumps(row), *lines[3:]]) + "\n")
    return ([f"data.target.path={chem}", "data.target.subsets=null"],
            [f"{chem}/reaction_prediction.jsonl:3: row has no answer ('answerKey')"])


def _no_chat_template(d: Path) -> tuple[list[str], list[str]]:
    """The Qwen tokenizer without its chat template, with data.target.chat true (the profile's)."""
    tok = d / "qwen-no-template"
    shutil.copytree(QWEN, tok)
    cfg = json.loads((tok / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (tok / "tokenizer_config.json").write_text(json.dumps(cfg))
    return [f"data.tokenizer={tok}"], ["params.yaml: data.target.chat: ", f"the tokenizer ({tok}) has none"]


def _splits_a_probe_answer(d: Path) -> tuple[list[str], list[str]]:
    """The toy world's probes (names the Qwen tokenizer splits) instead of the templates built for it."""
    return (["data.probes.source=toy", "data.capabilities=[ioi]"],
            [f"params.yaml: data.tokenizer {QWEN}: capability ioi, ", " answer: answer ' ", "must be exactly 1"])


@needs_shared
@pytest.mark.parametrize("case", [_bad_row, _no_chat_template, _splits_a_probe_answer],
                         ids=["bad-sciknoweval-row", "no-chat-template", "tokenizer-splits-a-probe-answer"])
def test_bad_real_input_is_one_line_naming_file_and_key_and_writes_nothing(tmp_path: Path, monkeypatch, qwen_model,
                                                                           case):
    sets, needles = case(tmp_path)
    project = study_project(tmp_path / "p", qwen_model, monkeypatch, *sets)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    for command in (["check"], ["stage", "prepare-data"]):
        r = CliRunner().invoke(app, command)
        assert r.exit_code == 2, r.output
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), r.output
        assert all(n in lines[0] for n in needles), (needles, lines[0])
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before  # no outs, no MLflow store


@needs_shared
@pytest.mark.slow
def test_study_profile_runs_every_stage_on_a_tiny_qwen(tmp_path: Path, monkeypatch, qwen_model):
    project = study_project(tmp_path / "p", qwen_model, monkeypatch)
    r = CliRunner().invoke(app, ["check"])
    assert r.exit_code == 0, r.output
    for s in ("prepare-data", "base", "sft", "rl", "protect", "rl_sft", "evaluate-forgetting", "extract-circuits", "score-dcv",
              "report"):
        r = CliRunner().invoke(app, ["stage", s])
        assert r.exit_code == 0, f"{s}: {r.output}"
        if s == "prepare-data":
            target_pairs_written(project)

    row = json.loads((project / "data/prepared/target/train.jsonl").read_text().splitlines()[0])
    assert row["prompt"].startswith("<|im_start|>user\n") and row["message"] in row["prompt"]
    rules = {json.loads(l)["answer_rule"] for s in ("train", "eval")
             for l in (project / f"data/prepared/target/{s}.jsonl").read_text().splitlines()}
    assert rules == {"letter", "equation"}
    m = json.loads((project / "metrics/prepare-data.json").read_text())
    assert m["probe_source"] == "templates" and set(m["kept"]) == {"ioi", "mcqa"}
    rl = json.loads((project / "metrics/rl.json").read_text())
    assert rl["config"]["loss_type"] == "dr_grpo" and rl["config"]["beta"] == 0.0
    for arm in ("rl", "rl_sft"):  # the reward was computed on every group: a mean in [0, 1] at the last step
        logs = json.loads((project / f"metrics/{arm}.json").read_text())["seeds"]["0"]["last_logs"]
        assert 0.0 <= logs["reward"] <= 1.0, logs
    assert (project / "models/rl/seed-0/final/model.safetensors").is_file()
    idx = json.loads((project / "circuits/index.json").read_text())
    assert idx["method"] == "eap-ig" and "rl/seed-0/step-2" in idx["models"]
    ec = json.loads((project / "metrics/extract-circuits.json").read_text())
    assert ec["batch_size"] == 8  # 8 pairs
    assert ec["capabilities"]["ioi"]["validate_heads"] == 4 and "rho_eap_ig_vs_exact" in ec["capabilities"]["ioi"]
    assert (project / "circuits/base/ioi.json").is_file() and (project / "reports/report.md").is_file()
    # The study's DBM masks on the SciKnowEval rows' own pairs (target), every model, and its report section.
    assert idx["study_capabilities"] == ["target"]
    for mid in idx["models"]:
        sm = json.loads((project / f"circuits/{mid}/study/target.json").read_text())
        assert sm["method"] == "dbm" and sm["n_pairs"] == 3 and len(sm["values"]) == sm["n_layers"]
    sc = json.loads((project / "metrics/score-dcv.json").read_text())
    assert set(sc["study"]["capabilities"]["target"]["arms"]) == {"sft", "rl", "protect", "rl_sft"}
    assert "## As the study measures it" in (project / "reports/report.md").read_text()
