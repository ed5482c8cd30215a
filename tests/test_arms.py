"""The fine-tuning arms: the shared correctness rule, target-row checks, forward KL, budgets, the registry, and the
stages `sft`, `rl` and `protect` on a tiny world (layout, metrics, MLflow, determinism, LoRA, seeds, bad input)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import REPO, write_params

# Tiny, matched budgets: sft and protect 4 prompts/step; rl 16 completions / 4 generations = 4 prompts/step.
TINY_ARMS = {
    "sft": {"max_steps": 6, "save_every": 3, "per_device_train_batch_size": 4, "logging_steps": 2, "warmup_steps": 1},
    "protect": {"max_steps": 6, "save_every": 3, "per_device_train_batch_size": 4, "logging_steps": 2, "warmup_steps": 1,
                "protection": {"batch_size": 8}},
    "rl": {"max_steps": 6, "save_every": 3, "per_device_train_batch_size": 16, "num_generations": 4,
           "generation_batch_size": 16, "logging_steps": 2, "warmup_steps": 1, "n_logged_completions": 4},
    "rl_sft": {"max_steps": 3, "save_every": 3, "save_steps": [1, 3], "per_device_train_batch_size": 16, "num_generations": 4,
               "generation_batch_size": 16, "logging_steps": 2, "warmup_steps": 1, "n_logged_completions": 4,
               "init_step": 3},  # continues sft's step 3
}


def _deep(d: dict, u: dict) -> dict:
    out = json.loads(json.dumps(d))
    for k, v in u.items():
        out[k] = _deep(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _stage(name: str):
    r = _invoke("stage", name)
    assert r.exit_code == 0, r.output
    return r


def _tree_bytes(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- library, fast


def test_reward_accepts_every_correct_form_and_nothing_else():
    from dcv.answers import is_correct, normalise
    from dcv.arms.rewards import correctness_reward

    ch = ["apple", "pear", "rice", "fish"]
    for c in (" B", " pear", " B ) pear", "B", " pear <eos>"):
        assert is_correct(c, "B", ch), c
    for c in (" A", " apple", " C ) pear", "", " banana", " A ) pear"):
        assert not is_correct(c, "B", ch), c
    # free text: normalised exact match
    assert is_correct("  Sodium Chloride. ", "sodium chloride")
    assert not is_correct("sodium", "sodium chloride")
    assert normalise("H2O, (water)!") == "h2o water"
    # labels other than A-D
    assert is_correct(" B", "B", ["x", "y"], ["A", "B"]) and not is_correct(" y", "A", ["x", "y"], ["A", "B"])
    # TRL's calling convention: one list entry per completion; rows without choices carry None
    r = correctness_reward(prompts=["p"] * 4, completions=[" pear", " A", "nacl", "NaCl"],
                           answer=["B", "B", "NaCl", "NaCl"], choices=[ch, ch, None, None], labels=[None] * 4,
                           trainer_state=None)
    assert r == [1.0, 0.0, 1.0, 1.0]


def test_evaluation_uses_the_same_rule():
    from dcv.target_eval import score_target

    rows = [{"prompt": "q", "answer": "B", "choices": ["apple", "pear", "rice", "fish"]},
            {"prompt": "q", "answer": "NaCl"}]
    s = score_target(rows, [" pear", "nacl"])
    assert s["accuracy"] == 1.0 and s["letter_distribution"]["B"] == 0.5 and s["letter_distribution"]["none"] == 0.5


def test_gold_completion_forms():
    from dcv.arms.data import gold_completion, sft_records

    row = {"prompt": "q", "answer": "C", "choices": ["apple", "pear", "rice", "fish"], "labels": None}
    assert [gold_completion(row, f) for f in ("letter", "word", "letter_word")] == [" C", " rice", " C ) rice"]
    assert gold_completion({"prompt": "q", "answer": "NaCl", "choices": None}, "word") == " NaCl"
    assert sft_records([row], "word") == [{"prompt": "q", "completion": " rice"}]


@pytest.mark.parametrize("lines,needle", [
    (['{"prompt": "q", "answer": "A", "choices": ["x", "y"]}', '{"prompt": "q", "choices": ["x", "y"]}'],
     "train.jsonl:2: row has no answer"),
    (['{"prompt": "q", "answer": "E", "choices": ["x", "y", "z", "w"]}'], "train.jsonl:1: answer 'E' is not among the choices"),
    (['{"prompt": "q", "answer": "A", "choices": ["x", "y"]}', "", '{"prompt": "", "answer": "A"}'],
     "train.jsonl:3: row has no 'prompt'"),
    ([], "train.jsonl: empty split"),
])
def test_bad_target_rows_name_file_and_line(tmp_path: Path, lines, needle):
    from dcv.arms.data import load_target
    from dcv.errors import DcvError

    f = tmp_path / "train.jsonl"
    f.write_text("".join(l + "\n" for l in lines))
    with pytest.raises(DcvError, match=needle.replace("(", r"\(")):
        load_target(f)


def test_forward_kl():
    from dcv.kl import forward_kl

    lp0 = torch.log_softmax(torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]), -1)
    lp1 = torch.log_softmax(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), -1)
    assert forward_kl(lp0, lp0) == pytest.approx(0.0)
    p0 = lp0[0].exp()
    expected = float((p0 * (lp0[0] - lp1[0])).sum()) / 2
    assert forward_kl(lp0, lp1) == pytest.approx(expected)
    assert forward_kl(lp0, lp1) != pytest.approx(forward_kl(lp1, lp0))  # forward, not reverse


class _CharTok:
    """Characters as ids (vocab 16, eos 15): enough of a tokenizer for the KL functions."""

    eos_token_id = 15

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(ch) % 15 for ch in text]}


def _tiny_lm(seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return Qwen2ForCausalLM(cfg).eval()


def test_sequence_kl_is_zero_on_itself_and_matches_the_exact_kl_on_one_token():
    """The sampled-sequence estimate: exactly 0 for a model against itself; for one-token completions it converges
    to the exact answer-position KL; the same seed draws the same samples."""
    from dcv.kl import answer_logprobs, completion_logprobs, forward_kl, sample_completions, sequence_kl

    tok, m0, m1 = _CharTok(), _tiny_lm(0), _tiny_lm(1)
    with torch.no_grad():
        m1.lm_head.weight.mul_(20.0)  # a policy far from the base
    prompts = ["abc", "hello", "xy"]
    pairs = sample_completions(m0, tok, prompts, 3000, 1, seed=7)
    assert pairs == sample_completions(m0, tok, prompts, 3000, 1, seed=7)
    lp0 = completion_logprobs(m0, pairs)
    assert sequence_kl(lp0, completion_logprobs(m0, pairs)) == 0.0
    exact = forward_kl(answer_logprobs(m0, tok, prompts), answer_logprobs(m1, tok, prompts))
    assert exact > 0.01
    assert sequence_kl(lp0, completion_logprobs(m1, pairs)) == pytest.approx(exact, rel=0.15)
    long = sample_completions(m0, tok, prompts, 4, 5, seed=1)
    assert len(long) == 12 and all(1 <= len(c) <= 5 for _, c in long)
    assert all(c[-1] == 15 or 15 not in c for _, c in long)  # cut after the first end-of-sequence


def test_arm_configs_and_budgets(tmp_path: Path):
    from pydantic import ValidationError

    from dcv.arms.rl import RLArmConfig
    from dcv.arms.sft import SFTArmConfig
    from dcv.errors import DcvError
    from stages.params import load_params

    assert SFTArmConfig(max_steps=10, save_every=4, save_steps=None).checkpoint_steps() == [4, 8, 10]
    assert SFTArmConfig(max_steps=10, save_steps=[5, 1, 2]).checkpoint_steps() == [1, 2, 5, 10]
    with pytest.raises(ValidationError, match="save_steps"):
        SFTArmConfig(max_steps=10, save_steps=[3, 11])
    assert RLArmConfig(per_device_train_batch_size=32, gradient_accumulation_steps=2, num_generations=8,
                       generation_batch_size=64).prompts_per_step == 8
    with pytest.raises(ValidationError, match="multiple of num_generations"):
        RLArmConfig(per_device_train_batch_size=12, num_generations=8, generation_batch_size=24)
    with pytest.raises(ValidationError, match="save_every"):
        SFTArmConfig(max_steps=5, save_every=10, save_steps=None)
    with pytest.raises(DcvError, match="sft.save_every: larger than max_steps"):
        load_params(write_params(tmp_path / "params.yaml", {"sft": {"max_steps": 20}}))
    p = load_params(write_params(tmp_path / "params.yaml"))
    assert p.sft.prompts_per_step == p.rl.prompts_per_step and p.sft.max_steps == p.rl.max_steps
    assert p.sft.completion_form == "word" and p.sft.checkpoint_steps() == p.rl.checkpoint_steps()
    for edit, key in (({"rl": {"max_steps": 700}}, "rl.max_steps"),
                      ({"rl": {"num_generations": 4}}, "rl.per_device_train_batch_size"),
                      ({"protect": {"save_steps": [7]}}, "protect.save_steps"),
                      ({"rl": {"match_budget_of": "ppo"}}, "rl.match_budget_of")):
        with pytest.raises(DcvError, match=key):
            load_params(write_params(tmp_path / "params.yaml", edit))
    load_params(write_params(tmp_path / "params.yaml", {"rl": {"max_steps": 700, "match_budget_of": None}}))


def test_every_registered_arm_has_a_params_section_a_command_and_a_stage():
    import yaml

    from dcv.arms import REGISTRY
    from stages.cli import stage_app
    from tests.conftest import REPO

    assert list(REGISTRY) == ["sft", "rl", "protect", "rl_sft"]
    commands = {c.name for c in stage_app.registered_commands}
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages_ = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, arm in REGISTRY.items():
        assert name in commands and name in params and stages_[name]["cmd"] == f"dcv stage {name}"
        assert stages_[name]["outs"] == [f"models/{name}"]
        assert arm.describe(arm.config())


def test_unmatched_budget_stops_the_stage_in_one_line(workdir: Path):
    write_params(workdir / "params.yaml", {"rl": {"max_steps": 700}})
    r = _invoke("stage", "rl")
    assert r.exit_code == 2
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: params.yaml: rl.max_steps:"), r.output


def test_device_flags_off_on_cpu():
    from dcv.arms.sft import SFTArmConfig
    from dcv.arms.train import device_flags

    f = device_flags(SFTArmConfig(), torch.device("cpu"))
    assert f["bf16"] is False and f["activation_checkpointing"] is False and f["use_cpu"] is True
    f = device_flags(SFTArmConfig(bf16=True, gradient_checkpointing=True), torch.device("cpu"))
    assert f["bf16"] is True and f["activation_checkpointing"] is True


# --------------------------------------------------------------------------------------------- stages, tiny


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """prepare-data and base once for this module (tiny world); tests copy the results."""
    d = tmp_path_factory.mktemp("prepared")
    write_params(d / "params.yaml", TINY_ARMS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        mp.chdir(d)
        _stage("prepare-data")
        _stage("base")
    return d


@pytest.fixture
def armdir(prepared: Path, workdir: Path) -> Path:
    """A workdir holding the prepared data and base model, with tiny arm params."""
    shutil.copytree(prepared / "data", workdir / "data")
    shutil.copytree(prepared / "models/base", workdir / "models/base")
    write_params(workdir / "params.yaml", TINY_ARMS)
    return workdir


def _params(workdir: Path, edit: dict) -> None:
    write_params(workdir / "params.yaml", _deep(TINY_ARMS, edit))


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["sft", "rl", "protect"])
def test_arm_writes_layout_metrics_and_mlflow(armdir: Path, arm: str):
    import mlflow

    from dcv.layout import Layout
    from dcv.models import load_model

    _stage(arm)
    lay = Layout(armdir)
    assert lay.seeds(arm) == [0]
    assert list(lay.checkpoints(arm, 0)) == [3, 6]
    for d in [*lay.checkpoints(arm, 0).values(), lay.final_dir(arm, 0)]:
        assert sorted(p.name for p in d.iterdir()) == ["config.json", "dcv_model.json", "generation_config.json",
                                                        "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert _tree_bytes(lay.final_dir(arm, 0)) == _tree_bytes(lay.checkpoints(arm, 0)[6])
    model, tok = load_model(lay.final_dir(arm, 0))
    assert tok.bos_token == "<bos>" and model.config.use_cache is True
    marker = json.loads((lay.final_dir(arm, 0) / "dcv_model.json").read_text())
    assert marker["arm"] == arm and marker["seed"] == 0 and marker["step"] == 6 and marker["tokenizer"] == "word-level"
    assert marker["config"]["max_steps"] == 6
    assert not list((armdir / "models").glob(".tmp-*"))

    m = json.loads((armdir / f"metrics/{arm}.json").read_text())
    assert "curve" not in m and "target_accuracy" not in m  # arms train only; evaluate-forgetting measures
    assert m["budget"] == {"max_steps": 6, "prompts_per_step": 4, "checkpoint_steps": [3, 6]}
    assert m["seeds"]["0"]["checkpoint_steps"] == [3, 6] and m["wall_s"] > 0
    assert m["description"] and m["config"]["max_steps"] == 6

    client = mlflow.tracking.MlflowClient(f"sqlite:///{armdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dcv-test")
    (run,) = client.search_runs([exp.experiment_id], f"tags.`dcv.stage` = '{arm}'")
    assert len(client.get_metric_history(run.info.run_id, "seed-0/train/loss")) == 3
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", f"{arm}.json"} <= arts
    if arm == "rl":
        assert len(client.get_metric_history(run.info.run_id, "seed-0/train/reward")) == 3
        assert len(client.get_metric_history(run.info.run_id, "seed-0/train/reward_std")) == 3
        assert "completions.json" in arts
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "completions.json", str(armdir))).read_text())
        assert table["columns"] == ["seed", "step", "prompt", "completion", "reward"] and table["data"]
    if arm == "protect":
        heads = m["prepared"]["heads"]
        assert set(heads) == {"induction", "ioi", "facts", "arithmetic", "mcqa"}
        for sel in heads.values():
            assert sel["heads"] and sum(sel["weights"]) == pytest.approx(1.0)
        assert len(client.get_metric_history(run.info.run_id, "seed-0/train/protect_penalty")) == 3


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["rl"])  # both arms share the launcher code (stages/arms.py main); rl is the costlier
def test_accelerate_launch_path_on_cpu_with_one_process(armdir: Path, arm: str):
    """common.launch with the repo's DDP config: the stage reruns itself under `accelerate launch` (one CPU
    process here) and writes the same bytes as the in-process run, with its MLflow run."""
    import mlflow

    _stage(arm)
    direct = _tree_bytes(armdir / "models" / arm)
    shutil.rmtree(armdir / "models" / arm)
    shutil.copytree(Path(__file__).resolve().parents[1] / "configs", armdir / "configs")
    _params(armdir, {"common": {"launch": {"num_processes": 1, "config_file": "configs/accelerate/ddp.yaml"}}})
    _stage(arm)
    assert _tree_bytes(armdir / "models" / arm) == direct
    client = mlflow.tracking.MlflowClient(f"sqlite:///{armdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dcv-test")
    runs = client.search_runs([exp.experiment_id], f"tags.`dcv.stage` = '{arm}'")
    assert len(runs) == 2 and all(x.info.status == "FINISHED" for x in runs)
    assert runs[0].data.params["common.launch.config_file"] == "configs/accelerate/ddp.yaml"
    assert runs[0].data.tags["launcher"] == "accelerate/1" and "launcher" not in runs[1].data.tags


def test_only_the_main_process_hashes_a_base_whose_marker_lacks_its_hashes(tmp_path: Path, monkeypatch):
    import dcv.models
    from stages.arms import base_fields

    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / dcv.models.MARKER).write_text(json.dumps({"kind": "hf", "tokenizer": "qwen"}))
    main = base_fields(tmp_path, True)
    assert main["base_weights_sha256"] == dcv.models.weight_hashes(tmp_path) and main["tokenizer"] == "qwen"

    def refuse(_):
        raise AssertionError("a non-main rank hashed the base")

    monkeypatch.setattr(dcv.models, "weight_hashes", refuse)
    assert base_fields(tmp_path, False)["base_weights_sha256"] is None
    (tmp_path / dcv.models.MARKER).write_text(json.dumps({"weights_sha256": {"model.safetensors": "x"}}))
    assert base_fields(tmp_path, False)["base_weights_sha256"] == {"model.safetensors": "x"}


def test_launch_params_are_checked(armdir: Path):
    _params(armdir, {"common": {"launch": {"num_processes": 2}}})
    r = _invoke("stage", "sft")
    assert r.exit_code == 2 and "common.launch.config_file: needed when num_processes > 1" in r.output
    _params(armdir, {"common": {"launch": {"config_file": "configs/accelerate/nope.yaml"}}})
    r = _invoke("stage", "rl")
    assert r.exit_code == 2 and "common.launch.config_file: file not found" in r.output
    # LoRA with sharded parameters: refused by the params check, before any rank starts (any stage: a shared rule)
    (armdir / "acc").mkdir(exist_ok=True)
    for name in ("zero3.yaml", "fsdp.yaml", "zero2.yaml"):
        shutil.copy(REPO / "configs/accelerate" / name, armdir / "acc" / name)
    for name, kind in (("zero3.yaml", "ZeRO-3"), ("fsdp.yaml", "FSDP")):
        _params(armdir, {"common": {"launch": {"config_file": f"acc/{name}"}}, "rl": {"finetune": "lora"}})
        r = _invoke("stage", "sft")
        assert r.exit_code == 2 and f"rl.finetune: lora with {kind} (common.launch.config_file acc/{name})" in r.output
    _params(armdir, {"common": {"launch": {"config_file": "acc/zero2.yaml"}}, "rl": {"finetune": "lora"}})
    from stages.params import load_params

    load_params(armdir / "params.yaml")  # ZeRO-2 keeps whole parameters: LoRA is fine


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["sft", "rl"])
def test_same_seed_twice_gives_identical_bytes(armdir: Path, arm: str):
    _stage(arm)
    first = _tree_bytes(armdir / "models" / arm)
    m1 = json.loads((armdir / f"metrics/{arm}.json").read_text())
    shutil.rmtree(armdir / "models" / arm)
    _stage(arm)
    assert _tree_bytes(armdir / "models" / arm) == first
    m2 = json.loads((armdir / f"metrics/{arm}.json").read_text())
    for m in (m1, m2):
        m.pop("wall_s")
        for s in m["seeds"].values():
            s.pop("wall_s")
    assert m1 == m2


@pytest.mark.slow
def test_rl_sft_continues_the_sft_checkpoint_of_its_seed(armdir: Path):
    """rl_sft starts from sft's checkpoint init_step (3) of the same seed: with a learning rate too small to move
    the weights, its final model is that checkpoint, not the base; its marker names the start. Without sft's
    checkpoints it stops in one line naming the missing directory, writing nothing."""
    from dcv.layout import Layout
    from dcv.models import load_model

    r = _invoke("stage", "rl_sft")
    assert r.exit_code == 2, r.output
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and "models/sft/seed-0/checkpoints/step-3: not a model directory (rl_sft.init sft" in lines[0]
    assert not (armdir / "models/rl_sft").exists() and not (armdir / "mlflow.db").exists()

    _stage("sft")
    _params(armdir, {"rl_sft": {"learning_rate": 1.0e-12}})
    _stage("rl_sft")
    lay = Layout(armdir)
    assert list(lay.checkpoints("rl_sft", 0)) == [1, 3]
    marker = json.loads((lay.final_dir("rl_sft", 0) / "dcv_model.json").read_text())
    assert marker["init"] == "sft/seed-0/step-3" and marker["arm"] == "rl_sft" and marker["config"]["init_step"] == 3
    w = lambda d: load_model(d)[0].state_dict()  # noqa: E731
    final, start, base = w(lay.final_dir("rl_sft", 0)), w(lay.checkpoints("sft", 0)[3]), w(lay.base_model)
    assert all(torch.allclose(final[k], start[k], atol=1e-6) for k in final)
    assert not all(torch.allclose(final[k], base[k], atol=1e-6) for k in final)
    m = json.loads((armdir / "metrics/rl_sft.json").read_text())
    assert "continued from sft step 3" in m["description"]


@pytest.mark.slow
def test_sft_learns_the_fixed_form_and_seeds_differ(armdir: Path):
    """Two seeds, enough steps for SFT to move the tiny model towards the word form."""
    _params(armdir, {"common": {"seeds": [0, 1]},
                     "sft": {"max_steps": 40, "save_every": 20, "learning_rate": 3.0e-3},
                     "rl": {"max_steps": 40, "save_every": 20}, "protect": {"max_steps": 40, "save_every": 20},
                     "rl_sft": {"init_step": 20, "max_steps": 20, "save_steps": [20]}})
    _stage("sft")
    from dcv.layout import Layout
    from dcv.models import load_model
    from dcv.target_eval import greedy_completions

    lay = Layout(armdir)
    assert lay.seeds("sft") == [0, 1]
    a, b = (lay.final_dir("sft", s) / "model.safetensors" for s in (0, 1))
    assert a.read_bytes() != b.read_bytes()
    m = json.loads((armdir / "metrics/sft.json").read_text())
    assert set(m["seeds"]) == {"0", "1"} and m["seeds"]["1"]["checkpoint_steps"] == [20, 40]
    # the fixed form: SFT trained on " <word>", so completions now start with an option word (on this barely
    # pretrained tiny base, not necessarily the right one), not a letter
    rows = [json.loads(l) for l in (armdir / "data/prepared/target/eval.jsonl").read_text().splitlines()]
    model, tok = load_model(lay.final_dir("sft", 0))
    comps = greedy_completions(model, tok, [r["prompt"] for r in rows], max_new_tokens=1)
    foods = {w for r in rows for w in r["choices"]}
    assert sum(1 for c in comps if c.strip() in foods) >= len(rows) // 2, comps


@pytest.mark.slow
def test_lora_checkpoints_are_merged_full_models(armdir: Path):
    _params(armdir, {"sft": {"finetune": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "o_proj"]}}})
    _stage("sft")
    from dcv.layout import Layout
    from dcv.models import load_model

    d = Layout(armdir).final_dir("sft", 0)
    assert not (d / "adapter_config.json").exists()
    model, _ = load_model(d)
    base, _ = load_model(armdir / "models/base")
    sd, sb = model.state_dict(), base.state_dict()
    assert set(sd) == set(sb)
    changed = {k for k in sd if not torch.equal(sd[k], sb[k])}
    assert changed and all(any(m in k for m in ("q_proj", "v_proj", "o_proj")) for k in changed)
    assert json.loads((d / "dcv_model.json").read_text())["finetune"] == "lora"


@pytest.mark.parametrize("arm", ["sft", "rl", "protect"])
@pytest.mark.parametrize("corrupt,needle", [
    (lambda rows: rows[:2] + [{k: v for k, v in rows[2].items() if k != "answer"}] + rows[3:],
     "data/prepared/target/train.jsonl:3: row has no answer"),
    (lambda rows: [dict(rows[0], answer="E")] + rows[1:], "data/prepared/target/train.jsonl:1: answer 'E' is not among"),
    (lambda rows: [], "data/prepared/target/train.jsonl: empty split"),
])
def test_bad_target_input_is_one_line_and_writes_nothing(armdir: Path, arm: str, corrupt, needle):
    f = armdir / "data/prepared/target/train.jsonl"
    rows = [json.loads(l) for l in f.read_text().splitlines()]
    f.write_text("".join(json.dumps(r) + "\n" for r in corrupt(rows)))
    r = _invoke("stage", arm)
    assert r.exit_code == 2, r.output
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], r.output
    assert not (armdir / "models" / arm).exists() and not (armdir / "metrics").exists()
    assert not (armdir / "mlflow.db").exists()


@pytest.mark.slow
def test_dvc_runs_the_arms_and_extraction_and_reruns_only_what_an_edit_feeds(built_repo: Path, tmp_path: Path):
    """One tiny DVC pipeline up to extract-circuits, from a copy of the session's built prepare-data and base (whose
    params these keys do not touch, so they do not rerun): a second repro runs nothing; a circuits key reruns only
    the extraction; an sft-only key sft and rl_sft (which continues sft), a protect-only key only protect. Every arm
    feeds extract-circuits (it depends on `models`), protect and rl_sft too though `common.arms` leaves them out."""
    import yaml

    from tests.conftest import copy_repo, ran_stages, run

    circuits = {"circuits": {"batch_size": 8, "heads_per_forward": 8, "eap_ig_steps": 3},
                "common": {"arms": ["sft", "rl"]}, "dcv": {"pairs": [["sft", "rl"]]}}
    repo = copy_repo(built_repo, tmp_path / "repo", {**TINY_ARMS, **circuits})

    def repro(*targets: str) -> set[str]:
        r = run(["dvc", "repro", *targets], repo)
        assert r.returncode == 0, r.stdout + r.stderr
        return ran_stages(r.stdout)

    def edit(section: str, key: str, value) -> None:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        node = params[section]
        *parents, leaf = key.split(".")
        for k in parents:
            node = node[k]
        node[leaf] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    arms = ("sft", "rl", "protect", "rl_sft")
    assert repro("extract-circuits") == {*arms, "extract-circuits"}
    assert (repo / "models/sft/seed-0/final/model.safetensors").is_file()
    assert (repo / "models/rl/seed-0/checkpoints/step-3/model.safetensors").is_file()
    assert (repo / "models/protect/seed-0/checkpoints/step-6/model.safetensors").is_file()
    assert (repo / "circuits/sft/seed-0/step-6/ioi.json").is_file()
    assert repro("extract-circuits") == set()
    edit("circuits", "eap_ig_steps", 2)
    assert repro("extract-circuits") == {"extract-circuits"}
    edit("sft", "learning_rate", 1.0e-3)  # an sft-only key: sft reruns, and rl_sft, which continues sft's checkpoint
    assert repro(*arms) == {"sft", "rl_sft"}
    edit("protect", "protection.weight", 3.0)  # a protect-only key
    assert repro(*arms) == {"protect"}


def test_vllm_generation_is_refused_on_cpu_before_the_model_loads(armdir: Path):
    _params(armdir, {"rl": {"use_vllm": True}})
    r = _invoke("stage", "rl")
    assert r.exit_code == 2 and "params.yaml: rl.use_vllm: vLLM generates on CUDA only" in r.output, r.output
    assert not (armdir / "models/rl").exists() and not (armdir / "metrics").exists()


@pytest.mark.parametrize("zero_stage, dist, refused", [(3, "DEEPSPEED", True), (2, "DEEPSPEED", False),
                                                       (None, "FSDP", True), (None, "MULTI_GPU", False)])
def test_lora_with_sharded_parameters_is_refused_on_every_rank_before_the_first_step(zero_stage, dist, refused):
    """A launch by hand (not through common.launch, which the params check reads) with LoRA and ZeRO-3 or FSDP: the
    checkpoint callback refuses at on_train_begin on any rank, not at the first save on the main process."""
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from dcv.arms.train import LORA_SHARDED, CheckpointCallback
    from dcv.errors import DcvError

    plugin = SimpleNamespace(zero_stage=zero_stage) if zero_stage else None
    acc = SimpleNamespace(num_processes=2, state=SimpleNamespace(deepspeed_plugin=plugin),
                          distributed_type=SimpleNamespace(name=dist))
    lora = SimpleNamespace(merge_and_unload=lambda: None)
    state = TrainerState()
    state.is_world_process_zero = False  # a rank other than the main one
    for model, expect in ((lora, refused), (torch.nn.Linear(1, 1), False)):
        cb = CheckpointCallback([1], on_checkpoint=lambda *a: None)
        cb.trainer = SimpleNamespace(accelerator=acc, model=model)
        if expect:
            with pytest.raises(DcvError, match=LORA_SHARDED.replace("(", r"\(").replace(")", r"\)")):
                cb.on_train_begin(None, state, TrainerControl())
        else:
            cb.on_train_begin(None, state, TrainerControl())
