"""The GRPO reward: 1.0 for a completion that the shared rule (`dcv.answers`) judges correct, else 0.0."""

from __future__ import annotations

from dcv.answers import row_correct


def correctness_reward(prompts: list, completions: list, answer: list[str], choices: list | None = None,
                       labels: list | None = None, answer_rule: list | None = None, **_) -> list[float]:
    """GRPO reward function (TRL signature: dataset columns arrive as keyword lists, one entry per completion). A
    row's `answer_rule` (SciKnowEval's letter parser for chat answers, the equation key) decides as it does in
    evaluation (`dcv.answers.row_correct`)."""
    n = len(completions)
    choices = choices if choices is not None else [None] * n
    labels = labels if labels is not None else [None] * n
    answer_rule = answer_rule if answer_rule is not None else [None] * n
    out = []
    for comp, ans, ch, lab, rule in zip(completions, answer, choices, labels, answer_rule):
        text = comp if isinstance(comp, str) else comp[-1]["content"]  # conversational: the last message
        row = {"answer": ans, "choices": ch, "labels": lab, "answer_rule": rule}
        out.append(1.0 if row_correct(row, text) else 0.0)
    return out
