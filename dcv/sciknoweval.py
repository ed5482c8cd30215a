"""SciKnowEval rows (the real profile's target task) as the pipeline's target rows.

MCQ rows become {prompt, answer (letter), choices, labels, answer_rule: "letter", task}; filling rows {prompt,
answer, answer_rule, task}, with `answer_rule` "equation" for `balancing_chemical_equation` (case and charges
kept, whitespace ignored: `dcv.answers.normalise_equation`) and "text" for other filling tasks (`normalise`). The
prompt is the instruction (`prompt.default`), the question and the options ("A. ..."), one per line; for a base
model it ends with "Answer:", for a chat model (`chat=True`) it is the user message, which `dcv.chat.render_prompt`
turns into the model's prompt. Every malformed row is a DcvError naming file and line (or hub id and row). The eval
split is a fixed, seeded sample, stratified by subset.

Subsets: a local directory holds one `<subset>.jsonl` per subset (the file stem is the subset name); the hub
dataset `hicai-zju/SciKnowEval` is grouped by each row's `details.task` instead, and the two names can differ (the
file `molecular_property_calculation.jsonl` holds rows of task `molecular_property_prediction`).
"""

from __future__ import annotations

import random
from pathlib import Path

from dcv.errors import DcvError
from dcv.io import read_jsonl_lines

HUB_ID = "hicai-zju/SciKnowEval"
EQUATION_TASKS = {"balancing_chemical_equation"}
ANSWER_SUFFIX = "\nAnswer:"  # ends a base model's (non-chat) prompt


def options_block(texts: list[str], labels: list[str]) -> str:
    """The options of an MCQ row as the prompt shows them: "A. ..." one per line."""
    return "\n".join(f"{l}. {t}" for l, t in zip(labels, texts))


def _text(raw: dict, key: str, where: str) -> str:
    v = raw.get(key)
    if not isinstance(v, str) or not v.strip():
        raise DcvError(f"{where}: row has no '{key}'")
    return v


def user_text(raw: dict, where: str) -> tuple[str, list[str] | None, list[str] | None]:
    """The question as one message (instruction, question, options "A. ..." one per line), with the option texts
    and labels of an MCQ row (None for a filling row)."""
    q = _text(raw, "question", where)
    p = raw.get("prompt")
    if p is None:
        instr = ""
    elif isinstance(p, dict) and isinstance(p.get("default", ""), str):
        instr = p.get("default", "")
    else:
        raise DcvError(f"{where}: 'prompt' must be an object with a string 'default'")
    kind = raw.get("type")
    if not isinstance(kind, str) or not (kind.startswith("mcq") or kind == "filling"):
        raise DcvError(f"{where}: 'type' must be 'mcq-...' or 'filling', got {kind!r}")
    if kind == "filling":
        return f"{instr}\n{q}".strip(), None, None
    ch = raw.get("choices")
    texts, labels = (ch.get("text"), ch.get("label")) if isinstance(ch, dict) else (None, None)
    if not isinstance(texts, list) or not isinstance(labels, list) or len(texts) != len(labels) or len(texts) < 2:
        raise DcvError(f"{where}: 'choices' needs lists 'text' and 'label' of equal length")
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise DcvError(f"{where}: every option in 'choices.text' must be a non-empty string")
    if not all(isinstance(x, str) and len(x) == 1 and x.isupper() for x in labels) or len(set(labels)) != len(labels):
        raise DcvError(f"{where}: 'choices.label' must be distinct capital letters, got {labels}")
    return f"{instr}\n{q}\n{options_block(texts, labels)}".strip(), list(texts), list(labels)


def to_row(raw: dict, where: str, chat: bool = False) -> dict:
    """One target row of a raw SciKnowEval row (see the module doc)."""
    if not isinstance(raw, dict):
        raise DcvError(f"{where}: expected a JSON object")
    text, texts, labels = user_text(raw, where)
    details = raw.get("details") if isinstance(raw.get("details"), dict) else {}
    task = details.get("task") if isinstance(details.get("task"), str) else ""
    prompt = text if chat else text + ANSWER_SUFFIX
    if texts is not None:
        key = raw.get("answerKey")
        if not key:
            raise DcvError(f"{where}: row has no answer ('answerKey')")
        if key not in labels:
            raise DcvError(f"{where}: answer {key!r} is not among the choices {labels}")
        return {"prompt": prompt, "answer": key, "choices": texts, "labels": labels, "answer_rule": "letter",
                "task": task}
    ans = raw.get("answer")
    if not isinstance(ans, str) or not ans.strip():
        raise DcvError(f"{where}: row has no answer ('answer')")
    return {"prompt": prompt, "answer": ans.strip(), "answer_rule": "equation" if task in EQUATION_TASKS else "text",
            "task": task}


def split_rows(per_subset: dict[str, list[dict]], n_eval: int, seed: int, where: str
               ) -> tuple[list[dict], list[dict]]:
    """(train, eval): `n_eval` rows in all, each subset contributing its share (rounded), seeded per subset."""
    total = sum(len(r) for r in per_subset.values())
    if n_eval >= total:
        raise DcvError(f"data.target.n_eval={n_eval} leaves no train rows ({total} rows in {where})")
    train, eval_ = [], []
    for subset, rows in per_subset.items():
        rng = random.Random(f"sciknoweval-{seed}-{subset}")
        idx = list(range(len(rows)))
        rng.shuffle(idx)
        k = round(n_eval * len(rows) / total)
        eval_ += [rows[i] for i in idx[:k]]
        train += [rows[i] for i in idx[k:]]
    return train, eval_


def load_split(path: Path, subsets: list[str] | None, n_eval: int, seed: int, chat: bool = False
               ) -> tuple[list[dict], list[dict]]:
    """Rows of the `<subset>.jsonl` files of a local directory (all of them when `subsets` is None)."""
    files = [Path(path) / f"{s}.jsonl" for s in subsets] if subsets else sorted(Path(path).glob("*.jsonl"))
    if not files:
        raise DcvError(f"{path}: no .jsonl files")
    per_file = {}
    for f in files:
        rows = [dict(to_row(r, f"{f}:{i}", chat), subset=f.stem) for i, r in read_jsonl_lines(f)]
        if not rows:
            raise DcvError(f"{f}: empty split")
        per_file[f.stem] = rows
    return split_rows(per_file, n_eval, seed, str(path))


HUB_FILE = "data/Chemistry/sciknoweval_chemistry_test.jsonl"  # the hub's Chemistry rows, every level, one file


def hub_file(repo_id: str = HUB_ID, filename: str = HUB_FILE, revision: str | None = None,
             cache_dir: str | None = None) -> Path:
    """The local copy of one file of the hub dataset (`huggingface_hub.hf_hub_download`). With HF_HUB_OFFLINE=1 (as
    this project runs) only the local cache is read; a file that is not there is a DcvError saying how to fetch it
    once on a machine with network (`hf download`)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision, cache_dir=cache_dir))
    except Exception as e:  # noqa: BLE001  (not cached / no network / no such file: several exception types)
        first = str(e).splitlines()[0] if str(e) else ""
        raise DcvError(f"{repo_id}/{filename} (revision {revision or 'main'}): not in the local Hugging Face cache "
                       f"({type(e).__name__}: {first}); fetch it once with network: hf download {repo_id} "
                       f"{filename} --repo-type dataset, or use a local directory of JSONL files") from None


def load_hub_split(subsets: list[str] | None, n_eval: int, seed: int, chat: bool = False, repo_id: str = HUB_ID,
                   filename: str = HUB_FILE, level: str | None = "L3", revision: str | None = None,
                   cache_dir: str | None = None) -> tuple[list[dict], list[dict]]:
    """Rows of the hub dataset's file `filename` (`hub_file`), kept to `level` and to the tasks `subsets`
    (`details.task`; all of them when None), grouped by task and split as `load_split` splits a directory."""
    path = hub_file(repo_id, filename, revision, cache_dir)
    per_task: dict[str, list[dict]] = {}
    for i, raw in read_jsonl_lines(path):
        where = f"{repo_id}/{filename}:{i}"
        details = raw.get("details") if isinstance(raw, dict) and isinstance(raw.get("details"), dict) else {}
        if level is not None and details.get("level") != level:
            continue
        task = details.get("task")
        if subsets is not None and task not in subsets:
            continue
        per_task.setdefault(task, []).append(dict(to_row(raw, where, chat), subset=task))
    missing = [s for s in (subsets or []) if s not in per_task]
    if missing or not per_task:
        raise DcvError(f"{repo_id}/{filename} (level {level}): no rows of task(s) {missing or subsets}; "
                       f"tasks there: {sorted(per_task)}")
    return split_rows(dict(sorted(per_task.items())), n_eval, seed, f"{repo_id}/{filename}")
