"""Multiple-choice formatting and answer parsing, shared by the MCQA capability, the target task and evaluation.

A completion is judged by one rule everywhere (reward, evaluation): its first word names an option either by its
letter ("B") or by the option's text ("pear"); "B ) pear" counts by its letter.
"""

from __future__ import annotations

from dcv.toy.world import LETTERS


def mcq_prompt(question: str, options: list[str]) -> str:
    opts = " ".join(f"{LETTERS[i]} ) {o}" for i, o in enumerate(options))
    return f"question : {question} ? {opts} answer :"


MCQ_WORDS = {"question", ":", "?", ")", "answer", *LETTERS}


def parse_choice(completion: str, choices: list[str]) -> int | None:
    """Index of the option a completion names, or None when it names none."""
    words = completion.replace(")", " ) ").split()
    if not words:
        return None
    first = words[0].strip(".,:;")
    if first.upper() in LETTERS[: len(choices)] and len(first) == 1:
        return LETTERS.index(first.upper())
    lowered = [c.strip().lower() for c in choices]
    text = " ".join(words).strip(".,:;").lower()
    for i, c in enumerate(lowered):
        if text == c or text.startswith(c + " ") or first.lower() == c:
            return i
    return None
