"""The one correctness rule of the target task, shared by the RL reward and by evaluation (`dcv.target_eval`).

- Multiple-choice rows (`choices` present): a completion is correct when `dcv.toy.mcq.parse_choice` finds that it
  names the gold option, in any form (" B", " pear", " B ) pear" all count alike).
- Free-text rows (no `choices`, e.g. SciKnowEval filling questions): normalised exact match of the completion with
  the answer (lower case, punctuation and extra whitespace removed).

The GRPO reward is 1.0 for a correct completion and 0.0 otherwise.
"""

from __future__ import annotations

import re
import string

from dcv.toy.mcq import parse_choice
from dcv.toy.world import LETTERS

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: the free-text comparison key."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def gold_index(answer: str, choices: list[str], labels: list[str] | None = None) -> int:
    """Index of the gold option: the answer is a label (`labels`, else the letters A, B, ...)."""
    keys = list(labels) if labels else LETTERS[: len(choices)]
    return keys.index(answer)


def chosen_index(completion: str, choices: list[str]) -> int | None:
    """The option a completion names (None when none): the shared parser."""
    return parse_choice(completion, choices)


def is_correct(completion: str, answer: str, choices: list[str] | None = None,
               labels: list[str] | None = None) -> bool:
    if choices:
        c = chosen_index(completion, choices)
        return c is not None and c == gold_index(answer, choices, labels)
    return normalise(completion) == normalise(answer) and normalise(answer) != ""


def row_correct(row: dict, completion: str) -> bool:
    """`is_correct` for a target row ({prompt, answer, choices?, labels?})."""
    return is_correct(completion, row["answer"], row.get("choices"), row.get("labels"))


def correctness_reward(prompts: list, completions: list, answer: list[str], choices: list | None = None,
                       labels: list | None = None, **_) -> list[float]:
    """GRPO reward function (TRL signature: dataset columns arrive as keyword lists, one entry per completion)."""
    n = len(completions)
    choices = choices if choices is not None else [None] * n
    labels = labels if labels is not None else [None] * n
    out = []
    for comp, ans, ch, lab in zip(completions, answer, choices, labels):
        text = comp if isinstance(comp, str) else comp[-1]["content"]  # conversational: the last message
        out.append(1.0 if is_correct(text, ans, ch, lab) else 0.0)
    return out
