"""Stages `prepare-data` and `base` on a tiny world, run by hand through the real CLI, MLflow included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import write_params


def _stage(name: str, params: str = "params.yaml"):
    r = CliRunner().invoke(app, ["stage", name, "--params", params])
    assert r.exit_code == 0, r.output
    return r


def _mlflow_runs(workdir: Path, stage: str):
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dcv-test")
    return client, client.search_runs([exp.experiment_id], f"tags.`dcv.stage` = '{stage}'")


def test_prepare_data_writes_every_out(workdir: Path):
    _stage("prepare-data")
    d = workdir / "data/prepared"
    assert (d / "tokenizer/tokenizer.json").is_file() and (d / "corpus/train.txt").stat().st_size > 0
    for split in ("train", "eval"):
        rows = [json.loads(l) for l in (d / f"target/{split}.jsonl").read_text().splitlines()]
        assert rows and all({"prompt", "answer", "choices"} <= set(r) for r in rows)
    for cap in ("induction", "ioi", "facts", "arithmetic", "mcqa"):
        rows = [json.loads(l) for l in (d / f"probes/{cap}.jsonl").read_text().splitlines()]
        assert len(rows) == 8 and set(rows[0]) == {"clean", "corrupt", "answer", "distractor"}
    assert not list(d.glob(".tmp-*"))


def test_multi_token_answers_are_rejected(workdir: Path, tmp_path_factory):
    """A tokenizer that splits the world's words (a character-level one) cannot serve these templates."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = {c: i for i, c in enumerate(["<unk>", "<pad>", "<eos>", " "] + [chr(x) for x in range(33, 127)])}
    t = Tokenizer(models.WordLevel(vocab=chars, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tdir = tmp_path_factory.mktemp("chartok")
    PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>").save_pretrained(str(tdir))
    write_params(workdir / "params.yaml", {"data": {"tokenizer": str(tdir)}})
    r = CliRunner().invoke(app, ["stage", "prepare-data"])
    assert r.exit_code == 2, r.output
    assert "capability induction" in r.output and "must be exactly 1" in r.output
    assert not (workdir / "data").exists()


def test_base_toy_metrics_model_and_mlflow(workdir: Path):
    _stage("prepare-data")
    _stage("base")
    m = json.loads((workdir / "metrics/base.json").read_text())
    assert set(m["capabilities"]) == {"induction", "ioi", "facts", "arithmetic", "mcqa"}
    for v in m["capabilities"].values():
        assert 0.0 <= v["accuracy"] <= 1.0
    assert sum(m["target_letter_distribution"].values()) == pytest.approx(1.0)
    assert m["wall_s"] > 0
    from dcv.models import load_model

    model, tok = load_model(workdir / "models/base")
    assert model.config.model_type == "qwen2" and tok.bos_token == "<bos>"
    client, runs = _mlflow_runs(workdir, "base")
    (run,) = runs
    assert run.data.metrics["capabilities.ioi.accuracy"] == m["capabilities"]["ioi"]["accuracy"]
    assert run.data.params["base.train.steps"] == "30" and run.data.tags["params_hash"]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 3
    assert len(client.get_metric_history(run.info.run_id, "capabilities.mean_accuracy")) == 2
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/model.safetensors" in arts


def test_base_hf_loads_a_local_model_and_records_hashes(workdir: Path):
    """base.kind hf on a tiny random Qwen2 saved to a directory (no hub)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from dcv.models import sha256_file
    from dcv.toy.tokenizer import load_tokenizer

    _stage("prepare-data")
    tok = load_tokenizer(workdir / "data/prepared/tokenizer")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id)
    src = workdir / "tiny-qwen2"
    Qwen2ForCausalLM(cfg).save_pretrained(str(src))
    tok.save_pretrained(str(src))
    write_params(workdir / "params.yaml", {"base": {"kind": "hf", "hf": {"model": "./tiny-qwen2"}}})
    _stage("base")
    marker = json.loads((workdir / "models/base/dcv_model.json").read_text())
    assert marker["kind"] == "hf" and marker["model"] == "./tiny-qwen2"
    assert marker["weights_sha256"] == {"model.safetensors": sha256_file(src / "model.safetensors")}
    m = json.loads((workdir / "metrics/base.json").read_text())
    assert m["n_params"] == sum(p.numel() for p in Qwen2ForCausalLM(cfg).parameters())
