"""Bad input and interrupted runs (one test group per class of the bad-input issue): every failure is caught before
compute, in one line naming the file and the key (or the data file and line), exit code 2, and nothing is written:
no outs, no MLflow run, no temporaries. Signals end a stage with 130 (SIGINT) or 143 (SIGTERM), its run KILLED and
its temporaries removed; a later run of the stage closes runs whose process is gone.

Cases run through the real CLI: in-process (typer's runner) where only the message matters, in a subprocess where
signals or the process matter. `bench/bad_input.py` times the same kinds of case end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import REPO, TINY, copy_repo, deep_update, write_params

SEED_MAX = 2**32 - 1


# ------------------------------------------------------------------------------------------------------- helpers


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _one_line_error(r, *needles: str, code: int = 2) -> str:
    """The run failed with `code` and said one line (`error: ...`) holding every needle; returns it."""
    assert r.exit_code == code, r.output
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    """Every path under `d` with its size and mtime: equal snapshots mean nothing was written."""
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))}


def _runs(d: Path) -> list:
    import mlflow

    db = d / "mlflow.db"
    if not db.exists():
        return []
    client = mlflow.tracking.MlflowClient(f"sqlite:///{db}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _edit(path: Path, fn) -> None:
    """Apply `fn` to the params dict in `path` (delete keys, set them to null, ...)."""
    p = yaml.safe_load(path.read_text())
    fn(p)
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def _dcv(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
           **popen.pop("env", {})}
    return subprocess.Popen([sys.executable, "-m", "stages.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def built(built_repo: Path, tmp_path_factory) -> Path:
    """The session's prepare-data and base (conftest `built_repo`) with an empty MLflow store, less its copy of the
    code (the stages run this repository's); tests work on copies."""
    d = copy_repo(built_repo, tmp_path_factory.mktemp("built") / "project")
    for code in ("dcv", "stages"):
        shutil.rmtree(d / code)
    return d


@pytest.fixture
def project(built: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of the built project (prepared data, models/base, its MLflow store) as the working directory."""
    d = tmp_path / "project"
    shutil.copytree(built, d)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    monkeypatch.chdir(d)
    return d


def _fails_writing_nothing(d: Path, args: list[str], *needles: str) -> str:
    before, n_runs = _snapshot(d), len(_runs(d))
    line = _one_line_error(_invoke(*args), *needles)
    assert _snapshot(d) == before
    assert len(_runs(d)) == n_runs
    return line


# ------------------------------------------------------------------------ 1. silent defaults: every key required


def test_empty_params_file_names_every_section(workdir: Path):
    (workdir / "params.yaml").write_text("")
    line = _one_line_error(_invoke("stage", "base"), "params.yaml: empty: every section is missing")
    for section in ("common", "data", "base", "circuits", "dcv", "forgetting", "sft", "rl", "protect"):
        assert section in line
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("edit,needle", [
    (lambda p: p.pop("data"), "params.yaml: data: missing section"),
    (lambda p: p["base"]["train"].pop("steps"), "params.yaml: base.train.steps: missing"),
    (lambda p: p["common"].pop("torch_threads"), "params.yaml: common.torch_threads: missing"),
    (lambda p: p.update(base=None), "params.yaml: base: empty section (its keys kind, seed, model, train, hf"),
    (lambda p: p["circuits"].pop("validate"), "params.yaml: circuits.validate: missing"),
    (lambda p: p["base"]["train"].update(lrr=p["base"]["train"].pop("lr")),
     "params.yaml: base.train.lr: missing, but base.train.lrr is written (a misspelling?)"),
], ids=["section", "key", "common-key", "empty-section", "aliased-key", "misspelt-key"])
@pytest.mark.parametrize("command", [["stage", "prepare-data"], ["stage", "base"], ["check"]])
def test_missing_section_or_key_is_named(workdir: Path, edit, needle, command):
    _edit(workdir / "params.yaml", edit)
    _one_line_error(_invoke(*command), needle)
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]


def test_key_written_twice_is_named_with_its_lines(workdir: Path):
    text = (workdir / "params.yaml").read_text().replace("base:\n", "base:\n  seed: 1\n", 1)
    (workdir / "params.yaml").write_text(text)
    _one_line_error(_invoke("check"), "params.yaml:", "key 'seed' is written twice in one section (first on line")


# ----------------------------------------------------------------------- 2. the right key named, messages whole


def test_unresolvable_tokenizer_is_data_tokenizer_before_any_run(workdir: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_params(workdir / "params.yaml", {"data": {"tokenizer": "nobody/no-such-tokenizer"},
                                           "base": {"kind": "hf", "hf": {"model": "nobody/no-such-model"}}})
    for command in (["stage", "prepare-data"], ["check"]):
        line = _one_line_error(_invoke(*command), "params.yaml: data.tokenizer: ", "nobody/no-such-tokenizer")
        assert "base.hf.model" not in line
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]  # no mlflow.db: no run was opened


def test_store_message_is_not_cut(workdir: Path, monkeypatch):
    deep = "/nonexistent-" + "d" * 200 + "/" + "e" * 200
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{deep}/mlflow.db")
    line = _one_line_error(_invoke("stage", "prepare-data"), "cannot be reached or written")
    assert line.endswith(f"(directory {deep} does not exist)")


# ------------------------------------------------- 3. cross-field checks before compute, named by their key


CROSS = [
    ({"base": {"model": {"hidden_size": 32, "num_attention_heads": 3, "num_key_value_heads": 1}}},
     "base.model.num_attention_heads: 3 does not divide base.model.hidden_size (32)"),
    ({"base": {"model": {"num_attention_heads": 4, "num_key_value_heads": 3}}},
     "base.model.num_key_value_heads: 3 does not divide base.model.num_attention_heads (4)"),
    ({"base": {"model": {"hidden_size": 36, "num_attention_heads": 4, "num_key_value_heads": 2}}},
     "base.model.num_attention_heads: head dimension hidden_size / num_attention_heads = 9 is odd"),
    ({"common": {"seeds": [0, SEED_MAX + 1]}}, f"common.seeds: {SEED_MAX + 1} is out of range"),
    ({"base": {"seed": SEED_MAX + 1}}, "base.seed: 4294967296 is out of range"),
    ({"forgetting": {"eval": {"kl_seed": SEED_MAX + 5}}}, "forgetting.eval.kl_seed: 4294967300 is out of range"),
    ({"sft": {"max_steps": 10, "save_every": 5}, "protect": {"max_steps": 10, "save_every": 5},
      "rl": {"match_budget_of": None, "max_steps": 12, "save_every": 12}},
     "dcv.pairs: ['sft', 'rl'] share no checkpoint step (sft: [5, 10]; rl: [12]), so score-dcv"),
    ({"rl_sft": {"init": "sft", "init_step": 7}}, "rl_sft.init_step: 7 is not a checkpoint step of arm sft"),
    ({"rl_sft": {"init": "rl_sft"}}, "rl_sft.init: 'rl_sft' is neither base nor another registered arm"),
    ({"rl_sft": {"init": "base", "init_step": 50}}, "rl_sft.init_step: 50, but rl_sft.init is base (set it null)"),
    ({"rl": {"init": "rl_sft", "init_step": None}, "rl_sft": {"init": "rl", "init_step": None}},
     "rl.init: the arms start from each other (rl -> rl_sft -> rl)"),
    ({"data": {"target": {"n_train": 1_000_000}}}, "data.target.n_train: n_train + n_eval = 1000016, but the toy "
                                                  "world has only"),
]


@pytest.mark.parametrize("edit,needle", CROSS, ids=[n.split(":")[0] for _, n in CROSS])
@pytest.mark.parametrize("command", [["stage", "base"], ["check"]])
def test_cross_field_rule_is_named_before_anything(workdir: Path, edit, needle, command):
    write_params(workdir / "params.yaml", edit)
    t0 = time.perf_counter()
    _one_line_error(_invoke(*command), f"params.yaml: {needle}")
    assert time.perf_counter() - t0 < 30  # in-process, imports already paid; bench/bad_input.py times it cold
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]


def test_cuda_without_cuda_is_named(workdir: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    write_params(workdir / "params.yaml", {"common": {"device": "cuda"}})
    _one_line_error(_invoke("stage", "prepare-data"), "params.yaml: common.device: cuda, but")
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]


IMPLIED = [
    ({"base": {"model": {"max_position_embeddings": 16}}},
     "params.yaml: base.model.max_position_embeddings: 16, but data/prepared/corpus/train.txt"),
    ({"sft": {"max_length": 8}}, "params.yaml: sft.max_length: 8 tokens, but 40 of 40 rows of data/prepared/target/train.jsonl"),
    ({"protect": {"max_length": 20}}, "params.yaml: protect.max_length: 20 tokens, but"),
    ({"sft": {"finetune": "lora", "lora": {"target_modules": ["q_proj", "q_prj"]}}},
     "params.yaml: sft.lora.target_modules: 'q_prj' matches no module of the base model (its layers: "),
    ({"rl": {"finetune": "lora", "lora": {"target_modules": ["mlp"]}}},
     "params.yaml: rl.lora.target_modules: 'mlp' matches Qwen2MLP, which LoRA cannot wrap"),
]


@pytest.mark.parametrize("edit,needle", IMPLIED, ids=["positions", "sft-max-length", "protect-max-length",
                                                      "lora-typo", "lora-not-a-layer"])
def test_dcv_check_finds_what_the_params_imply(workdir: Path, edit, needle):
    write_params(workdir / "params.yaml", edit)
    _one_line_error(_invoke("check"), needle)
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]


def test_base_refuses_a_corpus_longer_than_its_positions(project: Path):
    write_params(project / "params.yaml", {"base": {"model": {"max_position_embeddings": 16}}})
    _fails_writing_nothing(project, ["stage", "base"], "params.yaml: base.model.max_position_embeddings: 16, but "
                           "data/prepared/corpus/train.txt:", "tokens with <bos> and <eos>")


@pytest.mark.parametrize("arm,edit,needle", [
    ("sft", {"sft": {"max_length": 8}}, "params.yaml: sft.max_length: 8 tokens, but 40 of 40 rows of "
                                        "data/prepared/target/train.jsonl are longer (line 1: "),
    ("sft", {"sft": {"finetune": "lora", "lora": {"target_modules": ["q_prj"]}}},
     "params.yaml: sft.lora.target_modules: 'q_prj' matches no module"),
    ("protect", {"protect": {"max_length": 10}}, "params.yaml: protect.max_length: 10 tokens"),
])
def test_arm_refuses_sequences_and_modules_before_its_run(project: Path, arm, edit, needle):
    budget = {a: {"max_steps": 4, "save_every": 2} for a in ("sft", "rl", "protect", "rl_sft")}
    write_params(project / "params.yaml", deep_update(budget, edit))
    _fails_writing_nothing(project, ["stage", arm], needle)


# -------------------------------------------------------------- 4. data errors: before the run, with a place


def test_too_many_probes_fail_before_the_run_naming_the_key(workdir: Path):
    write_params(workdir / "params.yaml", {"data": {"probes": {"n_pairs": 64}}})
    _one_line_error(_invoke("stage", "prepare-data"), "params.yaml: data.probes.n_pairs: capability",
                    "distinct held-out probes exist, 64 asked")
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]  # no FAILED run: no mlflow.db at all


def test_probe_split_is_named_by_its_own_key(workdir: Path):
    write_params(workdir / "params.yaml", {"data": {"n_validation": 64}})
    _one_line_error(_invoke("check"), "params.yaml: data.n_validation: capability")


SCIKNOWEVAL_ROW = {"question": "Which reagent converts a primary alcohol to an aldehyde without over-oxidation?",
                   "type": "mcq-4-choices", "choices": {"text": ["PCC", "KMnO4", "CrO3/H2SO4", "HNO3"],
                                                        "label": ["A", "B", "C", "D"]}, "answerKey": "A",
                   "prompt": {"default": "Answer the chemistry question with the letter of the right option."}}


def test_target_prompts_the_tokenizer_cannot_read_are_refused(workdir: Path):
    d = workdir / "chem"
    d.mkdir()
    (d / "reagents.jsonl").write_text("".join(json.dumps(SCIKNOWEVAL_ROW) + "\n" for _ in range(30)))
    write_params(workdir / "params.yaml", {"data": {"target": {"source": "sciknoweval", "path": "chem", "n_eval": 5}}})
    for command in (["stage", "prepare-data"], ["check"]):
        _one_line_error(_invoke(*command), "chem/reagents.jsonl: ", "of the target prompt tokens are unknown to "
                        "data.tokenizer toy", "at most 5%")
    assert sorted(p.name for p in workdir.iterdir()) == ["chem", "params.yaml"]


def test_real_sciknoweval_rows_with_the_toy_tokenizer_are_refused(workdir: Path):
    shared = REPO.parent / "shared/data/sciknoweval-chem-l3"
    if not shared.is_dir():
        pytest.skip("no shared SciKnowEval rows here")
    write_params(workdir / "params.yaml", {"data": {"target": {"source": "sciknoweval", "path": str(shared),
                                                               "n_eval": 50}}})
    _one_line_error(_invoke("stage", "prepare-data"), f"{shared}/", ".jsonl: ", "unknown to data.tokenizer toy")
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("rel,corrupt,needle", [
    ("data/prepared/validation/ioi.jsonl", lambda t: t.replace("\n", "\n{oops\n", 1),
     "data/prepared/validation/ioi.jsonl:2: not valid JSON"),
    ("data/prepared/target/eval.jsonl", lambda t: t.split("\n", 1)[0] + "\n" + '{"answer": "A"}\n',
     "data/prepared/target/eval.jsonl:2: target row needs a non-empty string 'prompt'"),
    ("data/prepared/corpus/train.txt", lambda t: "", "data/prepared/corpus/train.txt: empty corpus"),
    ("data/prepared/tokenizer/tokenizer.json", lambda t: t[: len(t) // 2],
     "data/prepared/tokenizer/tokenizer.json: cannot load the tokenizer"),
])
def test_bad_prepared_file_is_named_by_file_and_line(project: Path, rel, corrupt, needle):
    f = project / rel
    f.write_text(corrupt(f.read_text()))
    _fails_writing_nothing(project, ["stage", "base"], needle)


# ------------------------------------------------------------------- 5. interrupted runs: SIGTERM, SIGINT, stale


def _started_pretraining(proc: subprocess.Popen, timeout: float = 240) -> str:
    seen, deadline = "", time.time() + timeout
    while "pretrain:" not in seen or "it/s" not in seen:  # tqdm shows the loop is stepping
        assert time.time() < deadline and proc.poll() is None, seen
        seen += proc.stdout.read(64)
    return seen


@pytest.fixture
def long_base(built: Path, tmp_path: Path) -> Path:
    """A copy of the built project without its base, whose params pretrain for minutes; its own TMPDIR."""
    d = tmp_path / "project"
    shutil.copytree(built, d)
    shutil.rmtree(d / "models")
    (d / "metrics/base.json").unlink()
    write_params(d / "params.yaml", {"base": {"train": {"steps": 4000, "log_every": 10, "eval_every": 4000}}})
    (d / "tmp").mkdir()
    return d


def _our_temporaries(tmpdir: Path) -> list[str]:
    """What the stage left in TMPDIR; torch's own compile cache (torchinductor_<user>) is not the stage's."""
    return sorted(p.name for p in tmpdir.iterdir() if not p.name.startswith("torchinductor_"))


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_pretraining_kills_the_run_and_leaves_nothing(long_base: Path, sig, code):
    d = long_base
    old = {r.info.run_id for r in _runs(d)}
    proc = _dcv(["stage", "base"], d, env={"TMPDIR": str(d / "tmp")})
    _started_pretraining(proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, out
    assert out.strip().splitlines()[-1] == f"error: interrupted ({signal.Signals(sig).name})"
    assert not (d / "models").exists() and not (d / "metrics/base.json").exists()
    assert not list(d.rglob(".tmp-*")) and _our_temporaries(d / "tmp") == []
    (run,) = [r for r in _runs(d) if r.info.run_id not in old]
    assert run.data.tags["dcv.stage"] == "base" and run.info.status == "KILLED" and run.info.end_time is not None


@pytest.mark.slow
def test_stale_running_run_is_closed_and_a_live_one_refuses_a_second(long_base: Path):
    d = long_base
    old = {r.info.run_id for r in _runs(d)}
    first = _dcv(["stage", "base"], d, start_new_session=True)
    _started_pretraining(first)
    second = _dcv(["stage", "base"], d)  # the same stage in the same repository while the first runs
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 2 and f"error: stage base is already running in {d} (pid {first.pid}" in out, out
    os.killpg(first.pid, signal.SIGKILL)  # no cleanup possible: the run stays RUNNING
    first.communicate()
    (stale,) = [r for r in _runs(d) if r.info.run_id not in old]
    assert stale.info.status == "RUNNING"
    write_params(d / "params.yaml", {"base": {"train": {"steps": 10, "log_every": 5, "eval_every": 10}}})
    third = _dcv(["stage", "base"], d)
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0, out
    runs = {r.info.run_id: r for r in _runs(d) if r.info.run_id not in old}
    assert runs[stale.info.run_id].info.status == "FAILED"
    assert f"process {first.pid}" in runs[stale.info.run_id].data.tags["dcv.closed"]
    (new,) = [r for r in runs.values() if r.info.run_id != stale.info.run_id]
    assert new.info.status == "FINISHED" and new.data.tags["dcv.closed_stale"] == stale.info.run_id


def test_a_signal_during_a_store_write_is_raised_when_the_write_is_done(tmp_path: Path, monkeypatch):
    """SIGTERM arriving inside an MLflow write (here: sent by the write itself) does not cut it in half: the metrics
    are all written, then the stage is interrupted and its run marked KILLED (an interrupted SQLite write had left
    a run RUNNING)."""
    import mlflow

    from dcv.errors import Interrupted, interrupt
    from dcv.tracking import StageRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    real = mlflow.tracking.MlflowClient.log_batch

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs here, in the middle of the write
        return real(*args, **kwargs)

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: interrupt(signum))
    try:
        with pytest.raises(Interrupted):
            with StageRun("base", "exp", tmp_path, {}, {"dcv.stage": "base"}) as run:
                monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_batch", signalled)  # the first step: written at once
                run.log_step(1, {"loss": 0.5, "acc": {"ioi": 1.0}})
                raise AssertionError("the interruption comes at the end of the write, before the stage goes on")
    finally:
        signal.signal(signal.SIGTERM, previous)
    got = mlflow.tracking.MlflowClient(uri).get_run(run.run_id)
    assert got.info.status == "KILLED" and got.data.metrics == {"loss": 0.5, "acc.ioi": 1.0}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_child_runs_end_with_their_stage_and_stale_children_are_closed(tmp_path: Path, monkeypatch):
    """evaluate-forgetting's child runs (one per arm): KILLED with an interrupted stage; closed with a stale one."""
    import mlflow

    from dcv.errors import Interrupted
    from dcv.tracking import StageRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.tracking.MlflowClient(uri)
    with pytest.raises(Interrupted):
        with StageRun("evaluate-forgetting", "exp", tmp_path, {}, {"dcv.stage": "evaluate-forgetting"}) as run:
            kids = [run.child(arm, {}, {"dcv.arm": arm}).run_id for arm in ("sft", "rl")]
            raise Interrupted(signal.SIGTERM)
    assert [client.get_run(r).info.status for r in [run.run_id, *kids]] == ["KILLED"] * 3

    # A process that died without ending anything: its run and a child stay RUNNING, tagged with a dead pid.
    dead = {"dcv.stage": "evaluate-forgetting", "dcv.pid": str(_dead_pid()), "dcv.host": os.uname().nodename}
    exp = client.get_experiment_by_name("exp").experiment_id
    parent = client.create_run(exp, tags=dead).info.run_id
    child = client.create_run(exp, tags={**dead, "mlflow.parentRunId": parent}).info.run_id
    other = client.create_run(exp, tags={**dead, "dcv.stage": "base"}).info.run_id  # another stage's: left alone
    with StageRun("evaluate-forgetting", "exp", tmp_path, {}, {"dcv.stage": "evaluate-forgetting"}) as run:
        pass
    assert client.get_run(parent).info.status == "FAILED" and client.get_run(child).info.status == "FAILED"
    assert client.get_run(other).info.status == "RUNNING"
    assert set(client.get_run(run.run_id).data.tags["dcv.closed_stale"].split(",")) == {parent, child}


def test_a_live_run_of_the_same_stage_is_found_straight_from_sqlite(tmp_path: Path, monkeypatch):
    """The early refusal (before a stage reads its inputs) reads the sqlite store without MLflow; it must agree."""
    import mlflow

    from dcv.errors import DcvError
    from dcv.tracking import _running_runs_sqlite, process_start, refuse_concurrent

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.create_experiment("exp")
    live = {"dcv.stage": "base", "dcv.pid": str(os.getppid()), "dcv.pid_start": process_start(os.getppid()) or "",
            "dcv.host": os.uname().nodename, "dcv.root": str(tmp_path.resolve())}
    refuse_concurrent("base", "exp", tmp_path)  # nothing running yet
    rid = client.create_run(exp, tags=live).info.run_id
    client.create_run(exp, tags={**live, "dcv.stage": "sft"})
    assert [r for r, _ in _running_runs_sqlite(tmp_path / "mlflow.db", "exp", "base")] == [rid]
    with pytest.raises(DcvError, match=f"stage base is already running in .* \\(pid {os.getppid()}, MLflow run {rid}\\)"):
        refuse_concurrent("base", "exp", tmp_path)
    refuse_concurrent("base", "exp", tmp_path / "elsewhere")  # another repository's run: not ours to refuse
    client.set_terminated(rid, "FINISHED")
    refuse_concurrent("base", "exp", tmp_path)


def test_a_live_writers_temporaries_are_left_and_a_dead_ones_removed(tmp_path: Path):
    from dcv import io

    live = tmp_path / f".tmp-out-{os.getppid()}-0123abcd"  # the parent of this process is alive
    dead = tmp_path / f".tmp-out-{_dead_pid()}-4567cdef"
    other = tmp_path / f".tmp-out-x-{_dead_pid()}-89abcdef"  # a temporary of `out-x`, not of `out`
    for p in (live, dead, other):
        p.mkdir()
    with io.atomic_dir(tmp_path / "out") as d:
        (d / "f").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name, other.name])


# -------------------------------------------------------- 6. the tracking store's own reason, said as it is


@pytest.mark.parametrize("command", [["stage", "prepare-data"], ["check"]])
def test_file_store_says_mlflow_refuses_it_and_how_to_opt_in(workdir: Path, monkeypatch, command):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (workdir / "mlruns").as_uri())
    _one_line_error(_invoke(*command), f"MLflow tracking store {(workdir / 'mlruns').as_uri()}: MLflow",
                    "refuses file stores", "MLFLOW_ALLOW_FILE_STORE=true")
    assert sorted(p.name for p in workdir.iterdir()) == ["params.yaml"]


# ---------------------------------------------------------- 7. `dcv check` before DVC touches anything


def test_make_run_checks_before_dvc_repro():
    out = subprocess.run(["make", "-n", "run", f"VENV={REPO / '.no-venv'}"], cwd=REPO, capture_output=True, text=True)
    lines = out.stdout.splitlines()
    check = next(i for i, l in enumerate(lines) if l.rstrip().endswith("dcv check"))
    repro = next(i for i, l in enumerate(lines) if l.rstrip().endswith("dvc repro"))
    assert check < repro


def test_check_passes_on_the_repository_params():
    r = subprocess.run([sys.executable, "-m", "stages.cli", "check", "--params", str(REPO / "params.yaml")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok: ") and "ok: sft:" in r.stdout and "ok: protect:" in r.stdout


@pytest.mark.slow
def test_check_then_repro_leaves_the_outs_when_a_key_is_missing(built_repo: Path, tmp_path: Path):
    """The user's case: `common.torch_threads` deleted. `dvc repro` alone removes models/base first; `make run`'s
    `dcv check && dvc repro` stops before DVC starts."""
    repo = copy_repo(built_repo, tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    r = subprocess.run(["dvc", "repro", "base"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "Running stage" not in r.stdout, r.stdout + r.stderr
    before = _snapshot(repo / "models") | {"metrics/base.json": (repo / "metrics/base.json").stat().st_mtime_ns}
    _edit(repo / "params.yaml", lambda p: p["common"].pop("torch_threads"))
    r = subprocess.run(f"{sys.executable} -m stages.cli check && dvc repro", shell=True, cwd=repo, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and r.stderr.strip() == "error: params.yaml: common.torch_threads: missing (every key " \
        "is written out; params.yaml of the repository documents each one)", r.stdout + r.stderr
    after = _snapshot(repo / "models") | {"metrics/base.json": (repo / "metrics/base.json").stat().st_mtime_ns}
    assert after == before
    # Without the check, DVC removes the outs before the stage refuses (why `make run` checks first).
    r = subprocess.run(["dvc", "repro", "base"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "common.torch_threads" in r.stdout + r.stderr
    assert not (repo / "models/base").exists()


# ------------------------------------------------------------------------------ 8. paths said as paths


@pytest.mark.parametrize("args,needle", [
    (["--model", "/nonexistent"], "error: --model: /nonexistent: no such directory"),
    (["--model", "./models/nope"], "error: --model: ./models/nope: no such directory"),
    (["--model", "params.yaml"], "error: --model: params.yaml: not a directory"),
    (["--model", "data"], "error: --model: data: not a model directory (no config.json)"),
    (["--model", "models/base", "--base", "/nonexistent"], "error: --base: /nonexistent: no such directory"),
    (["--model", "models/base", "--capability", "telepathy"],
     "error: --capability: no probe set data/prepared/probes/telepathy.jsonl (there are: arithmetic, facts"),
    (["--model", "models/base", "--probes", "nope.jsonl"], "error: --probes: nope.jsonl: no such file"),
])
def test_by_hand_paths_are_said_as_paths(project: Path, args, needle):
    line = _fails_writing_nothing(project, ["stage", "extract-circuits", *args], needle)
    assert "repo id" not in line.lower() and "repo_id" not in line


def test_toy_target_capacity_is_make_rows_own():
    """The params check's count of distinct toy target questions is exactly what make_rows can draw."""
    from dcv.toy.target import make_rows
    from dcv.toy.world import World, WorldConfig
    from stages.params import toy_target_capacity

    cfg = WorldConfig(**{**TINY["data"]["world"], "n_known_entities": 6, "n_target_entities": 4, "n_foods": 5})
    n = toy_target_capacity(cfg)
    assert n == 4 * 4 * 24  # the target entities only, not every known entity
    train, eval_ = make_rows(World.build(cfg), n - 10, 10)
    assert len({r["prompt"] for r in train + eval_}) == n
    with pytest.raises(ValueError, match="distinct questions"):
        make_rows(World.build(cfg), n, 1)
