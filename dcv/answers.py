"""The one correctness rule of a target task, shared by the RL reward, greedy evaluation and the report.

- Multiple-choice rows (`choices` present): a completion is correct when `parse_choice` finds that it names the
  gold option, in any form (" B", " pear", " B ) pear" all count alike).
- Free-text rows (no `choices`, e.g. SciKnowEval filling questions): normalised exact match of the completion with
  the answer (lower case, punctuation and extra whitespace removed).

A row may name its rule in `answer_rule` (one of `RULES`); without it the two rules above apply, as they always
did. SciKnowEval rows name theirs: `letter` (`parse_letter`, for chat-model answers to MCQ rows) and `equation`
(`normalise_equation`, for balanced chemical equations, where case and charges matter).

Nothing here knows which world the rows come from (toy or SciKnowEval): the rule is the row's.
"""

from __future__ import annotations

import re
import string
from typing import Callable

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
    """`is_correct` for a target row ({prompt, answer, choices?, labels?}), or the rule its `answer_rule` names."""
    if row.get("answer_rule") is not None:
        return rule_of(row).correct(completion, row)
    return is_correct(completion, row["answer"], row.get("choices"), row.get("labels"))


# --- answers of chat models ---------------------------------------------------------------------------------

_THINK_END = "</think>"
# A standalone capital letter: not inside a word or a number ("B", "(B)", "**B**", "B." and "B)" all qualify).
_LETTER = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9])")
# After a standalone "A", these words make it the option letter ("A is correct"); any other lower-case word makes it
# the English article ("A good choice is C").
_END_OF_OPTION = r"(?=$|\s|[,;:)]|\.(?:$|\s))"
_AFTER_LETTER_A = {"is", "was", "would", "should", "seems", "appears", "looks", "must", "and", "or", "because",
                   "since", "as", "fits", "matches"}


def strip_thinking(completion: str) -> str:
    """The completion after its reasoning block (`<think>...</think>`, as Qwen3-style models write one)."""
    return completion.rsplit(_THINK_END, 1)[1] if _THINK_END in completion else completion


def parse_letter(completion: str, choices: list[str], labels: list[str] | None = None) -> int | None:
    """Index of the option a chat model's answer names, or None. The rule, in order:

    1. a reasoning block `<think>...</think>` is dropped, then surrounding whitespace and `*`/`` ` `` markup;
    2. a completion that is exactly one label, in either case ("b", "B."), names it;
    3. a completion that is an option's text names it; one that starts with an option's text of two or more
       characters, followed by a space, the end, "," ";" ":" ")" or a final ".", names that option (the longest
       match: "18.015 g/mol"); a one-character option ("I", iodine) must be the whole answer ("I do not know");
    4. otherwise the first clear letter wins: the first upper-case label standing alone, not inside a word or a
       number ("B", "B.", "(B)", "**B**", "B) text", "The answer is B", "Answer: B"), except a standalone "A"
       followed by a lower-case word other than a verb or conjunction ("A good choice is C": the article).
    Lower-case letters count only as the whole answer (rule 2): "a" is far more often the article.
    """
    keys = list(labels) if labels else LETTERS[: len(choices)]
    text = strip_thinking(completion).strip().strip("*`").strip()
    bare = text.strip(".:)(").strip()
    if len(bare) == 1 and bare.upper() in keys:
        return keys.index(bare.upper())
    exact = [i for i, c in enumerate(choices) if c.strip() and text.rstrip(".") == c.strip()]
    if exact:
        return exact[0]
    starts = [(len(c.strip()), i) for i, c in enumerate(choices)
              if len(c.strip()) > 1 and re.match(re.escape(c.strip()) + _END_OF_OPTION, text)]
    if starts:
        return max(starts)[1]
    for m in _LETTER.finditer(text):
        letter = m.group(1)
        if letter not in keys:
            continue
        if letter == "A":
            nxt = re.match(r"\s+([a-z]+)", text[m.end():])
            if nxt and nxt.group(1) not in _AFTER_LETTER_A:
                continue
        return keys.index(letter)
    return None


_ARROWS = re.compile(r"<=>|<->|==|->|→|⟶|⇌|⇋|↔|=")


def equation_answer(completion: str) -> str:
    """The equation a completion states: after any reasoning block, the first line holding `=` or an arrow, from
    after its last ':' ("The balanced equation is: 2H2 + O2 = 2H2O"); the whole text when no line has one."""
    text = strip_thinking(completion)
    for line in text.splitlines():
        if _ARROWS.search(line):
            return line.rsplit(":", 1)[-1]
    return text


def normalise_equation(text: str) -> str:
    """The comparison key of a chemical equation: all whitespace removed, markup dropped (`**`, `` ` ``, `$`, and a
    `*` at either end: a single `*` inside is a hydrate's dot, "CoCl2*6H2O"), every arrow written `=`, a final
    period dropped. Case, charges ("{+}") and parentheses are kept: "Co"/"CO" and "Ag"/"Ag{+}" are different species
    (both pairs occur in SciKnowEval's gold answers, which `normalise` would merge), and spaces are not
    ("2 H2O" = "2H2O")."""
    t = re.sub(r"\s|\*\*|[`$]", "", equation_answer(text)).strip("*").rstrip(".")
    return _ARROWS.sub("=", t)


class Rule:
    """One correctness rule: which option a completion names (None for free-text rules) and whether it is right."""

    def __init__(self, choose: Callable[[str, dict], int | None] | None,
                 key: Callable[[str], str] | None = None):
        self.choose, self.key = choose, key

    def choice(self, completion: str, row: dict) -> int | None:
        return self.choose(completion, row) if self.choose else None

    def correct(self, completion: str, row: dict) -> bool:
        if self.choose:
            c = self.choose(completion, row)
            return c is not None and c == gold_index(row["answer"], row["choices"], row.get("labels"))
        gold = self.key(row["answer"])
        return gold != "" and self.key(completion) == gold


RULES: dict[str, Rule] = {
    "option": Rule(lambda c, r: parse_choice(c, r["choices"])),  # the toy's forms: " B", " pear", " B ) pear"
    "letter": Rule(lambda c, r: parse_letter(c, r["choices"], r.get("labels"))),  # chat answers: "**B**", "(B) ..."
    "text": Rule(None, normalise),  # normalised exact match
    "equation": Rule(None, normalise_equation),  # balanced chemical equations
}


def rule_of(row: dict) -> Rule:
    """The row's rule: its `answer_rule`, else `option` for rows with choices and `text` for the others."""
    name = row.get("answer_rule") or ("option" if row.get("choices") else "text")
    if name not in RULES:
        raise ValueError(f"answer_rule {name!r} is not one of {sorted(RULES)}")
    return RULES[name]


def row_choice(row: dict, completion: str) -> int | None:
    """Index of the option the completion names under the row's rule (None: none, or a free-text row)."""
    return rule_of(row).choice(completion, row)
