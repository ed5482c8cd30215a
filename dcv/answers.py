"""The one correctness rule of a target task, shared by the RL reward, greedy evaluation and the report.

- Multiple-choice rows (`choices` present): a completion is correct when `parse_choice` finds that it names the
  gold option, in any form (" B", " pear", " B ) pear" all count alike).
- Free-text rows (no `choices`, e.g. SciKnowEval filling questions): normalised exact match of the completion with
  the answer (lower case, punctuation and extra whitespace removed).

Nothing here knows which world the rows come from (toy or SciKnowEval): the rule is the row's.
"""

from __future__ import annotations

import re
import string

LETTERS = ["A", "B", "C", "D"]
FORMS = ("letter", "word", "letter_word")  # ways to name an option: " B", " pear", " B ) pear"

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def parse_choice(completion: str, choices: list[str]) -> int | None:
    """Index of the option a completion names, or None when it names none: its first word is an option's letter
    ("B", "b", "B )") or the completion starts with an option's text ("pear", "Kiwi .")."""
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


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: the free-text comparison key."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def gold_index(answer: str, choices: list[str], labels: list[str] | None = None) -> int:
    """Index of the gold option: the answer is a label (`labels`, else the letters A, B, ...)."""
    keys = list(labels) if labels else LETTERS[: len(choices)]
    return keys.index(answer)


def is_correct(completion: str, answer: str, choices: list[str] | None = None,
               labels: list[str] | None = None) -> bool:
    if choices:
        c = parse_choice(completion, choices)
        return c is not None and c == gold_index(answer, choices, labels)
    return normalise(completion) == normalise(answer) and normalise(answer) != ""


def completion(choices: list[str], answer: str, form: str, labels: list[str] | None = None) -> str:
    """The gold completion of a multiple-choice row in one form of `FORMS`: " B", " pear" or " B ) pear"."""
    text = choices[gold_index(answer, choices, labels)]
    return {"letter": f" {answer}", "word": f" {text}", "letter_word": f" {answer} ) {text}"}[form]


def row_correct(row: dict, completion: str) -> bool:
    """`is_correct` for a target row ({prompt, answer, choices?, labels?})."""
    return is_correct(completion, row["answer"], row.get("choices"), row.get("labels"))
