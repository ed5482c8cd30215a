"""SciKnowEval rows as target rows: the real files of ../shared as a schema fixture, and malformed rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dcv.errors import DcvError
from dcv.sciknoweval import load_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sciknoweval-chem-l3"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/sciknoweval-chem-l3 not present")
def test_real_files_load_with_a_stratified_eval_split():
    train, eval_ = load_split(SHARED, None, 240, seed=0)
    assert len(train) + len(eval_) == 2400 and len(eval_) == 240
    mcq = [r for r in train + eval_ if "choices" in r]
    assert len(mcq) == 2100 and all(r["answer"] in r["labels"] for r in mcq)
    assert {r["subset"] for r in eval_} == {p.stem for p in SHARED.glob("*.jsonl")}
    again, _ = load_split(SHARED, None, 240, seed=0)
    assert again == train


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


GOOD = {"question": "q?", "type": "mcq-4-choices", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}


@pytest.mark.parametrize("bad,msg", [
    ({**GOOD, "answerKey": ""}, "no answer"),
    ({**GOOD, "answerKey": "C"}, "not among the choices"),
    ({"question": "q?", "type": "filling", "answer": ""}, "no answer"),
    ({**GOOD, "question": ""}, "no 'question'"),
])
def test_malformed_rows_name_file_and_line(tmp_path: Path, bad, msg):
    d = _write(tmp_path, [GOOD, GOOD, bad])
    with pytest.raises(DcvError, match=rf"t\.jsonl:3: .*{msg}"):
        load_split(d, None, 1, seed=0)


def test_empty_file_is_an_error(tmp_path: Path):
    (tmp_path / "t.jsonl").write_text("")
    with pytest.raises(DcvError, match="empty split"):
        load_split(tmp_path, None, 1, seed=0)


# --- malformed input, line numbers, encodings --------------------------------------------------------------


def test_errors_name_the_file_line_not_the_row_count(tmp_path: Path):
    (tmp_path / "t.jsonl").write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "answerKey": "Z"}) + "\n")
    with pytest.raises(DcvError, match=r"t\.jsonl:3: answer 'Z' is not among"):
        load_split(tmp_path, None, 1, seed=0)


def test_a_byte_that_is_not_utf8_is_an_error_naming_file_and_line(tmp_path: Path):
    (tmp_path / "t.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"question": "caf\xe9"}\n')
    with pytest.raises(DcvError, match=r"t\.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 18\)"):
        load_split(tmp_path, None, 1, seed=0)
    from dcv.io import read_jsonl

    with pytest.raises(DcvError, match=r"t\.jsonl:2: not valid UTF-8"):
        read_jsonl(tmp_path / "t.jsonl")


@pytest.mark.parametrize("bad,msg", [
    ({**GOOD, "type": "essay"}, "'type' must be 'mcq-...' or 'filling'"),
    ({**GOOD, "choices": ["a", "b"]}, "'choices' needs lists"),
    ({**GOOD, "choices": {"text": ["a", ""], "label": ["A", "B"]}}, "non-empty string"),
    ({**GOOD, "choices": {"text": ["a", "b"], "label": ["A", "A"]}}, "distinct capital letters"),
    ({**GOOD, "prompt": "just a string"}, "'prompt' must be an object"),
])
def test_more_malformed_rows(tmp_path: Path, bad, msg):
    d = _write(tmp_path, [GOOD, bad])
    with pytest.raises(DcvError, match=rf"t\.jsonl:2: .*{msg}"):
        load_split(d, None, 1, seed=0)


# --- rows for a chat model; the answer rules on the real rows ------------------------------------------------


def _real(name: str) -> list[dict]:
    return [json.loads(line) for line in (SHARED / f"{name}.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/sciknoweval-chem-l3 not present")
def test_chat_prompts_carry_instruction_question_and_options():
    from dcv.sciknoweval import to_row

    raw = _real("molar_weight_calculation")[1]
    row = to_row(raw, "x:1", chat=True)
    lines = row["prompt"].splitlines()
    assert lines[0] == raw["prompt"]["default"] and raw["question"] in row["prompt"]
    assert lines[-4:] == [f"{l}. {t}" for l, t in zip(raw["choices"]["label"], raw["choices"]["text"])]
    assert row["answer_rule"] == "letter" and row["task"] == "molar_weight_calculation"
    base = to_row(raw, "x:1")
    assert base["prompt"] == row["prompt"] + "\nAnswer:"
    eq = to_row(_real("balancing_chemical_equation")[0], "x:1", chat=True)
    assert eq["answer_rule"] == "equation" and "choices" not in eq and not eq["prompt"].endswith("Answer:")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/sciknoweval-chem-l3 not present")
def test_letter_rule_on_every_real_mcq_row():
    from dcv.answers import row_choice, row_correct

    train, eval_ = load_split(SHARED, None, 240, seed=0, chat=True)
    mcq = [r for r in train + eval_ if "choices" in r]
    assert len(mcq) == 2100
    for r in mcq:
        g, wrong = r["answer"], next(x for x in r["labels"] if x != r["answer"])
        text = r["choices"][r["labels"].index(g)]
        for c in (g, f"{g}.", f"({g})", f"The answer is {g}", f"Answer: {g}", f"**{g}**", f"{g}) {text}",
                  f"{g}. {text}", g.lower(), f"<think>\nA or B or C or D?\n</think>\n\n{g}", text):
            assert row_correct(r, c), (c, r["choices"])
        assert not row_correct(r, f"The answer is {wrong}") and row_choice(r, "I do not know.") is None


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/sciknoweval-chem-l3 not present")
def test_equation_rule_on_every_real_filling_row():
    """Gold answers survive `normalise_equation`; `normalise` (the plain free-text rule) would accept answers that
    are chemically wrong: the sides' '=' turned into '+', a charge dropped, or a case change (Co -> CO)."""
    from dcv.answers import normalise, normalise_equation, row_correct

    train, eval_ = load_split(SHARED, ["balancing_chemical_equation"], 30, seed=0, chat=True)
    rows = train + eval_
    assert len(rows) == 300 and {r["answer_rule"] for r in rows} == {"equation"}
    assert len({normalise_equation(r["answer"]) for r in rows}) == 300
    lax = 0
    for r in rows:
        gold = r["answer"]
        assert normalise_equation(gold) == gold.replace(" ", "")
        for c in (gold, gold.replace(" ", ""), gold.replace("=", "->"), gold.replace(" = ", " → "),
                  f"The balanced chemical equation is: {gold}", f"**{gold}**", f"Sure.\n\n{gold}\n",
                  f"<think>\nbalance it\n</think>\n\n{gold}."):
            assert row_correct(r, c), (c, gold)
        wrong = gold.replace("=", "+")
        assert not row_correct(r, wrong) and not row_correct(r, "2" + gold)
        lax += normalise(wrong) == normalise(gold)
    assert lax == 300  # the plain rule cannot see where the products start
    co = [r for r in rows if "Co" in r["answer"].replace("CO", "")]
    assert co and all(not row_correct(r, r["answer"].replace("Co", "CO")) for r in co)
    assert all(normalise(r["answer"].replace("Co", "CO")) == normalise(r["answer"]) for r in co)


def test_letter_parser_cases():
    from dcv.answers import parse_letter

    ch = ["water", "salt", "sugar", "sand"]
    cases = {"B": 1, " B": 1, "b": 1, "(C)": 2, "**D**": 3, "D) sand": 3, "Answer: A": 0, "The answer is C.": 2,
             "A is correct": 0, "A good choice is C": 2, "A. water": 0, "The correct option is (B) salt.": 1,
             "sugar": 2, "I think it is D because E is not an option": 3, "none of these": None, "": None,
             "E": None, "<think>It is not A</think>C": 2}
    for c, want in cases.items():
        assert parse_letter(c, ch) == want, c
    assert parse_letter("Option 2", ["1", "2"], ["1", "2"]) is None  # labels are letters in SciKnowEval


def test_rows_without_an_answer_rule_keep_the_toy_rule():
    from dcv.answers import is_correct, row_choice, row_correct

    row = {"prompt": "q", "answer": "B", "choices": ["pear", "kiwi"]}
    for c in (" B", " kiwi", " B ) kiwi", " A", "The answer is B", "**B**"):
        assert row_correct(row, c) == is_correct(c, "B", ["pear", "kiwi"])
    assert row_correct(row, "The answer is B") is False  # the toy parser reads the first word only
    assert row_correct({**row, "answer_rule": "letter"}, "The answer is B") is True
    assert row_choice(row, " kiwi") == 1 and row_choice({"prompt": "q", "answer": "x"}, "x") is None
    with pytest.raises(ValueError, match="answer_rule 'nope' is not one of"):
        row_correct({**row, "answer_rule": "nope"}, "B")


def fake_hub_cache(cache: Path, files: dict[str, list[dict]]) -> Path:
    """A Hugging Face hub cache holding `hicai-zju/SciKnowEval` at revision main with one file: the rows of `files`
    (a shared file name -> its rows) as the hub's Chemistry file (every level in one JSONL), as `hf download` leaves
    it (refs/main -> snapshots/<commit>/<path>)."""
    from dcv.sciknoweval import HUB_FILE

    repo, commit = cache / "datasets--hicai-zju--SciKnowEval", "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    f = repo / "snapshots" / commit / HUB_FILE
    f.parent.mkdir(parents=True)
    f.write_text("".join(json.dumps(r) + "\n" for rows in files.values() for r in rows))
    return cache


def _shared_rows(name: str) -> list[dict]:
    return [json.loads(l) for l in (SHARED / f"{name}.jsonl").read_text().splitlines() if l.strip()]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/sciknoweval-chem-l3 not present")
def test_hub_file_gives_the_local_directory_rows_level_and_task_kept(tmp_path: Path):
    """The hub's one Chemistry file, L3 rows kept and grouped by details.task: the same split as the directory of the
    same rows (retrosynthesis: file stem = task name); rows of another level are left out."""
    from dcv.sciknoweval import load_hub_split

    retro, weight = _shared_rows("retrosynthesis")[:40], _shared_rows("molar_weight_calculation")[:30]
    l2 = [dict(r, details={**r["details"], "level": "L2"}) for r in retro[:10]]
    cache = fake_hub_cache(tmp_path / "hub", {"a": retro, "b": l2, "c": weight})
    train, eval_ = load_hub_split(["retrosynthesis"], 8, seed=3, cache_dir=str(cache))
    d = tmp_path / "dir"
    d.mkdir()
    (d / "retrosynthesis.jsonl").write_text("".join(json.dumps(r) + "\n" for r in retro))
    assert (train, eval_) == load_split(d, None, 8, seed=3)
    train, eval_ = load_hub_split(None, 7, seed=3, cache_dir=str(cache))
    assert len(train) + len(eval_) == 70 and {r["subset"] for r in eval_} == {"retrosynthesis", "molar_weight_calculation"}
    with pytest.raises(DcvError, match=r"no rows of task\(s\) \['retrosynthesis_x'\]; tasks there: "):
        load_hub_split(["retrosynthesis_x"], 7, seed=3, cache_dir=str(cache))


def test_hub_file_not_cached_is_a_clear_error(tmp_path: Path):
    """Offline (HF_HUB_OFFLINE=1) with an empty cache: one message saying how to fetch the file once."""
    from huggingface_hub import constants

    from dcv.sciknoweval import load_hub_split

    if not constants.HF_HUB_OFFLINE:
        pytest.skip("needs HF_HUB_OFFLINE=1 (set by conftest unless the environment says otherwise)")
    with pytest.raises(DcvError, match=r"hicai-zju/SciKnowEval/data/Chemistry/sciknoweval_chemistry_test.jsonl "
                                       r"\(revision main\): not in the local Hugging Face cache .* fetch it once with "
                                       r"network: hf download hicai-zju/SciKnowEval "):
        load_hub_split(None, 10, seed=0, cache_dir=str(tmp_path))


QWEN = SHARED.parent / "qwen-tokenizer"


@pytest.mark.skipif(not (SHARED.is_dir() and QWEN.is_dir()), reason="../shared data not present")
def test_prepare_data_reads_the_hub_source_from_the_cache(workdir: Path, tmp_path: Path, monkeypatch):
    """`data.target.source: sciknoweval-hub` through the stage: the target rows of the cached hub file, the same as
    source sciknoweval on a directory of the same rows; bad keys of the source are one line naming the key."""
    from huggingface_hub import constants
    from typer.testing import CliRunner

    from stages.cli import app
    from tests.conftest import write_params

    retro = _shared_rows("retrosynthesis")[:40]
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(fake_hub_cache(tmp_path / "hub", {"r": retro})))
    data = {"tokenizer": str(QWEN), "capabilities": ["ioi"], "probes": {"source": "templates"},
            "target_pairs": {"kinds": ["key_swap"], "n_pairs": 2, "n_discovery": 2}}
    target = {"source": "sciknoweval-hub", "n_eval": 8, "chat": True}
    write_params(workdir / "params.yaml", {"data": {**data, "target": target}})
    r = CliRunner().invoke(app, ["stage", "prepare-data"])
    assert r.exit_code == 0, r.output
    hub = {s: (workdir / f"data/prepared/target/{s}.jsonl").read_bytes() for s in ("train", "eval")}
    d = tmp_path / "dir"
    d.mkdir()
    (d / "retrosynthesis.jsonl").write_text("".join(json.dumps(r) + "\n" for r in retro))
    write_params(workdir / "params.yaml", {"data": {**data, "target": {**target, "source": "sciknoweval", "path": str(d)}}})
    r = CliRunner().invoke(app, ["stage", "prepare-data"])
    assert r.exit_code == 0, r.output
    assert hub == {s: (workdir / f"data/prepared/target/{s}.jsonl").read_bytes() for s in ("train", "eval")}
    for edit, needle in [({"path": str(d)}, "params.yaml: data.target.path: "),
                         ({"source": "sciknoweval", "path": str(d), "revision": "v1"}, "params.yaml: data.target.revision: "),
                         ({"source": "sciknoweval-hug"}, "params.yaml: data.target.source: unknown target source"),
                         ({"subsets": ["no_such_task"]}, "no rows of task(s) ['no_such_task']")]:
        write_params(workdir / "params.yaml", {"data": {**data, "target": {**target, **edit}}})
        r = CliRunner().invoke(app, ["check"])
        if "no_such_task" in needle:  # a task name is known only once the file is read: the stage says it
            r = CliRunner().invoke(app, ["stage", "prepare-data"])
        assert r.exit_code == 2 and needle in r.output and len(r.output.strip().splitlines()) == 1, (edit, r.output)
