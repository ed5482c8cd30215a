"""The GRPO reward: 1.0 for a completion that the shared rule (`dcv.answers`) judges correct, else 0.0."""

from __future__ import annotations

from dcv.answers import is_correct


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
