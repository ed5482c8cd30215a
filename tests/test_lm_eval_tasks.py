"""The local lm-evaluation-harness tasks of configs/lm_eval on hand-written fixture rows (tests/fixtures/lm_eval,
each benchmark's real schema), offline, on a tiny random Qwen2 model with a byte-level tokenizer built here.
Skipped when lm-eval (the `eval` extra) is not installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dcv.errors import DcvError

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO / "configs" / "lm_eval"
DATA = REPO / "tests" / "fixtures" / "lm_eval"
TASKS = ["hellaswag", "truthfulqa_mc2", "mmlu", "winogrande", "ifeval", "humaneval"]
METRICS = {"hellaswag": {"acc", "acc_norm"}, "truthfulqa_mc2": {"acc"}, "mmlu": {"acc"}, "winogrande": {"acc"},
           "ifeval": {"prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
                      "inst_level_loose_acc"},
           "humaneval": {"pass@1/create_test"}}


def _local_module():
    spec = importlib.util.spec_from_file_location("dcv_local_under_test", TASKS_DIR / "dcv_local.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny():
    """A random 2-layer Qwen2 and a byte-level BPE tokenizer without merges (one token per byte: any text)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(alphabet)}}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                      eos_token_id=0, pad_token_id=0, bos_token_id=0)
    return Qwen2ForCausalLM(cfg).eval(), tok


@pytest.fixture
def punkt_stand_in(tmp_path: Path):
    """TEST ONLY: an untrained Punkt model (empty parameter files) where NLTK looks for punkt_tab, so IFEval's
    checker runs here without network. Real runs need NLTK's punkt_tab (configs/lm_eval/README.md): sentence
    counts there use its learned abbreviations."""
    nltk = pytest.importorskip("nltk")  # comes with lm-eval
    d = tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    d.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (d / name).write_text("")
    nltk.data.path.insert(0, str(tmp_path / "nltk_data"))
    yield
    nltk.data.path.remove(str(tmp_path / "nltk_data"))


def test_every_task_runs_offline_and_gives_numeric_scores(tiny, punkt_stand_in):
    """IFEval joins when the harness's ifeval extra (langdetect, immutabledict) is installed."""
    pytest.importorskip("lm_eval")
    import torch

    from dcv.lm_eval_bridge import evaluate

    torch.set_num_threads(1)
    model, tok = tiny
    # every fixture row, the tasks' own generation settings (IFEval up to 1280 new tokens): ~10 s on one thread
    ifeval = all(importlib.util.find_spec(m) for m in ("langdetect", "immutabledict"))
    tasks = [t for t in TASKS if ifeval or t != "ifeval"]
    res = evaluate(model, tok, TASKS_DIR, tasks, batch_size=4, data_dir=DATA, allow_code_execution=True)
    assert set(res) == set(tasks)
    for task, metrics in res.items():
        assert METRICS[task] <= set(metrics), (task, metrics)
        assert all(0.0 <= v <= 1.0 for v in metrics.values()), (task, metrics)


def test_humaneval_scorer_runs_programs_and_counts_passes():
    m = _local_module()
    ref = "def check(candidate):\n    assert candidate(2, 3) == 5\ncheck(add)"
    good, bad = "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"
    assert m.pass_at_k([ref], [[good]], k=[1]) == {"pass@1": 1.0}
    assert m.pass_at_k([ref], [[bad]], k=[1]) == {"pass@1": 0.0}
    assert m.pass_at_k([ref], [[good, bad, bad, bad]], k=[1, 2]) == {"pass@1": 0.25, "pass@2": 0.5}
    assert not m.passes("while True:\n    pass\n", timeout=1.0)  # a hanging program fails, it does not hang us
    assert not m.passes("import os\nassert os.getcwd().startswith('/tmp')\nraise SystemExit(3)\n")


def test_fixture_rows_follow_the_benchmarks_schemas():
    import json

    need = {"hellaswag/validation.jsonl": {"activity_label", "ctx_a", "ctx_b", "endings", "label"},
            "truthfulqa/validation.jsonl": {"question", "mc1_targets", "mc2_targets"},
            "mmlu/test.jsonl": {"question", "subject", "choices", "answer"},
            "winogrande/validation.jsonl": {"sentence", "option1", "option2", "answer"},
            "ifeval/train.jsonl": {"key", "prompt", "instruction_id_list", "kwargs"},
            "humaneval/test.jsonl": {"task_id", "prompt", "canonical_solution", "test", "entry_point"}}
    for rel, keys in need.items():
        rows = [json.loads(line) for line in (DATA / rel).read_text().splitlines()]
        assert rows and all(keys <= set(r) for r in rows), rel
    m = _local_module()
    for r in (json.loads(line) for line in (DATA / "humaneval/test.jsonl").read_text().splitlines()):
        assert m.passes(r["prompt"] + r["canonical_solution"] + r["test"] + f"\ncheck({r['entry_point']})")


def test_requirements_are_checked_before_a_run(tmp_path: Path):
    pytest.importorskip("lm_eval")
    from dcv.lm_eval_bridge import check_requirements

    check_requirements(TASKS_DIR, ["hellaswag", "mmlu"], DATA)
    with pytest.raises(DcvError, match=r"lm_eval task mmlu: data file not found: .*mmlu/test\.jsonl"):
        check_requirements(TASKS_DIR, ["mmlu"], tmp_path)
    with pytest.raises(DcvError, match=r"lm_eval task hellaswag: reads local data files .* \(data_dir\)"):
        check_requirements(TASKS_DIR, ["hellaswag"], None)
    with pytest.raises(DcvError, match="lm_eval task humaneval: runs model-written code .* allow_code_execution"):
        check_requirements(TASKS_DIR, ["humaneval"], DATA)
    check_requirements(TASKS_DIR, ["humaneval"], DATA, allow_code_execution=True)
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english")
    except LookupError:
        if importlib.util.find_spec("langdetect") and importlib.util.find_spec("immutabledict"):
            with pytest.raises(DcvError, match=r"lm_eval task ifeval: needs NLTK data .*punkt_tab"):
                check_requirements(TASKS_DIR, ["ifeval"], DATA)
