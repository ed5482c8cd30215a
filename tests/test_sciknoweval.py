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
