"""SciKnowEval rows (the real profile's target task) as the pipeline's target rows.

MCQ rows become {prompt, answer (letter), choices}; filling rows {prompt, answer}. A malformed row is an error
naming file and line. The eval split is a fixed, seeded sample, stratified by file.
"""

from __future__ import annotations

import random
from pathlib import Path

from dcv.errors import DcvError
from dcv.io import read_jsonl


def to_row(raw: dict, where: str) -> dict:
    q = raw.get("question")
    instr = (raw.get("prompt") or {}).get("default", "") if isinstance(raw.get("prompt"), dict) else ""
    if not isinstance(q, str) or not q.strip():
        raise DcvError(f"{where}: row has no 'question'")
    if str(raw.get("type", "")).startswith("mcq"):
        ch = raw.get("choices") or {}
        texts, labels = ch.get("text"), ch.get("label")
        if not isinstance(texts, list) or not isinstance(labels, list) or len(texts) != len(labels) or len(texts) < 2:
            raise DcvError(f"{where}: 'choices' needs lists 'text' and 'label' of equal length")
        key = raw.get("answerKey")
        if not key:
            raise DcvError(f"{where}: row has no answer ('answerKey')")
        if key not in labels:
            raise DcvError(f"{where}: answer {key!r} is not among the choices {labels}")
        opts = "\n".join(f"{l}. {t}" for l, t in zip(labels, texts))
        return {"prompt": f"{instr}\n{q}\n{opts}\nAnswer:".strip(), "answer": key, "choices": list(texts),
                "labels": list(labels)}
    ans = raw.get("answer")
    if not isinstance(ans, str) or not ans.strip():
        raise DcvError(f"{where}: row has no answer ('answer')")
    return {"prompt": f"{instr}\n{q}\nAnswer:".strip(), "answer": ans.strip()}


def load_split(path: Path, subsets: list[str] | None, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    files = [Path(path) / f"{s}.jsonl" for s in subsets] if subsets else sorted(Path(path).glob("*.jsonl"))
    if not files:
        raise DcvError(f"{path}: no .jsonl files")
    per_file = []
    for f in files:
        rows = [dict(to_row(r, f"{f}:{i}"), subset=f.stem) for i, r in enumerate(read_jsonl(f), 1)]
        if not rows:
            raise DcvError(f"{f}: empty split")
        per_file.append(rows)
    total = sum(len(r) for r in per_file)
    if n_eval >= total:
        raise DcvError(f"data.target.n_eval={n_eval} leaves no train rows ({total} rows in {path})")
    train, eval_ = [], []
    for rows in per_file:
        rng = random.Random(f"sciknoweval-{seed}-{rows[0]['subset']}")
        idx = list(range(len(rows)))
        rng.shuffle(idx)
        k = round(n_eval * len(rows) / total)
        eval_ += [rows[i] for i in idx[:k]]
        train += [rows[i] for i in idx[k:]]
    return train, eval_
