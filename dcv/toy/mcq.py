"""Multiple-choice formatting and answer parsing, shared by the MCQA capability, the target task and evaluation.

Completions are judged by the shared rule of `dcv.answers` (reward, evaluation alike).
"""

from __future__ import annotations

from dcv.answers import LETTERS


def mcq_prompt(question: str, options: list[str]) -> str:
    opts = " ".join(f"{LETTERS[i]} ) {o}" for i, o in enumerate(options))
    return f"question : {question} ? {opts} answer :"


MCQ_WORDS = {"question", ":", "?", ")", "answer", *LETTERS}
