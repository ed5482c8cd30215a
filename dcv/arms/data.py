"""Target rows for the fine-tuning arms: validated on load, turned into TRL datasets.

A target row is {"prompt": str, "answer": str, "choices": [str, ...] (multiple choice), "labels": [...] (optional,
the option keys when they are not A, B, ...), "answer_rule": str (optional, `dcv.answers.RULES`)}; a chat row
(prepare-data with `data.target.chat`, `dcv.chat.chat_row`) adds "message" (the user turn), "system" and
"template_kwargs", and its "prompt" is their rendering. Every problem is a DcvError naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path

from dcv.answers import LETTERS, completion
from dcv.chat import rows_are_chat
from dcv.errors import DcvError
from dcv.io import read_jsonl


def check_row(row: dict, where: str) -> dict:
    """The row normalised to the four keys the arms use; raises DcvError naming `where` when it is malformed."""
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DcvError(f"{where}: row has no 'prompt'")
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise DcvError(f"{where}: row has no answer ('answer')")
    choices = row.get("choices")
    labels = row.get("labels")
    if choices is not None:
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
            raise DcvError(f"{where}: 'choices' must be a list of at least 2 non-empty strings")
        if labels is not None and (not isinstance(labels, list) or len(labels) != len(choices)):
            raise DcvError(f"{where}: 'labels' must be a list as long as 'choices'")
        if labels is None and len(choices) > len(LETTERS):
            raise DcvError(f"{where}: {len(choices)} choices but only {len(LETTERS)} letters")
        keys = list(labels) if labels is not None else LETTERS[: len(choices)]
        if answer not in keys:
            raise DcvError(f"{where}: answer {answer!r} is not among the choices {keys}")
    elif labels is not None:
        raise DcvError(f"{where}: 'labels' without 'choices'")
    rule = row.get("answer_rule")
    if rule is not None:
        from dcv.answers import RULES

        if rule not in RULES:
            raise DcvError(f"{where}: answer_rule {rule!r} is not one of {sorted(RULES)}")
    out = {"prompt": prompt, "answer": answer, "choices": choices, "labels": labels, "answer_rule": rule}
    if row.get("message") is not None:
        if not isinstance(row["message"], str) or not row["message"].strip():
            raise DcvError(f"{where}: 'message' (the user turn of a chat row) must be a non-empty string")
        out.update(message=row["message"], system=row.get("system"), template_kwargs=dict(row.get("template_kwargs") or {}))
    return out


def load_target(path: Path) -> list[dict]:
    """Validated rows of a target split; an empty split is an error too."""
    path = Path(path)
    rows = read_jsonl(path)
    if not rows:
        raise DcvError(f"{path}: empty split (no rows)")
    # read_jsonl skips blank lines: map rows back to their line numbers in the file.
    lines = [i for i, l in enumerate(path.read_text(encoding="utf-8").split("\n"), 1) if l.strip()]
    return [check_row(r, f"{path}:{n}") for n, r in zip(lines, rows)]


def gold_completion(row: dict, form: str) -> str:
    """The one fixed-form completion SFT trains on: " B", " pear" or " B ) pear"; free-text rows: " <answer>"."""
    if not row.get("choices"):
        return " " + row["answer"].strip()
    return completion(row["choices"], row["answer"], form, row.get("labels"))


def sft_records(rows: list[dict], form: str) -> list[dict]:
    """Prompt-completion records (the loss falls on the completion only): TRL's standard format, or for chat rows
    its conversational one (`dcv.chat.sft_record`: the user turn, the assistant's answer without the toy's leading
    space), which TRL renders to exactly the row's `prompt`."""
    from dcv.chat import sft_record

    if not rows_are_chat(rows):
        return [{"prompt": r["prompt"], "completion": gold_completion(r, form)} for r in rows]
    return [sft_record(r["message"], gold_completion(r, form).lstrip(" "), True, r["system"], r["template_kwargs"])
            for r in rows]


def rl_records(rows: list[dict]) -> list[dict]:
    """Prompt-only records (chat rows: the conversational prompt, `dcv.chat.grpo_record`); `answer`, `choices`,
    `labels` and `answer_rule` travel to the reward function as columns."""
    from dcv.chat import grpo_record

    chat = rows_are_chat(rows)
    return [{**(grpo_record(r["message"], True, r["system"]) if chat else {"prompt": r["prompt"]}),
             "answer": r["answer"], "choices": r["choices"], "labels": r["labels"], "answer_rule": r["answer_rule"]}
            for r in rows]


def template_kwargs(rows: list[dict]) -> dict | None:
    """The chat template kwargs of chat rows (GRPOConfig.chat_template_kwargs), None for plain rows."""
    return dict(rows[0]["template_kwargs"]) if rows and rows_are_chat(rows) else None
