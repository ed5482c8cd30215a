"""The interface of a template capability (probe pairs for any Hugging Face tokenizer) and its registry.

A template capability writes candidate probe pairs from templates and word lists held in its module; it never
filters them itself: `dcv.templates.build` keeps the candidates the tokenizer at hand can serve (single-token
answers, equal-length pairs) and counts the rest by reason, the same way for every capability.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod

from dcv.probe_pair import ProbePair


class TemplateCapability(ABC):
    """A prior capability of a pretrained model, probed with clean/corrupted pairs written from templates."""

    name: str = ""
    description: str = ""

    @abstractmethod
    def candidates(self, tok, rng: random.Random) -> list[ProbePair]:
        """Candidate pairs, a finite list fixed by `rng` and the tokenizer (whose vocabulary some capabilities draw
        on, or whose digit/letter tokens decide where a space goes). Duplicates and pairs the tokenizer cannot serve
        are allowed: the builder drops and counts them."""


REGISTRY: dict[str, type[TemplateCapability]] = {}


def register(cls: type[TemplateCapability]) -> type[TemplateCapability]:
    REGISTRY[cls.name] = cls
    return cls


def ids(tok, text: str, special: bool = False) -> list[int]:
    return tok(text, add_special_tokens=special)["input_ids"]


def spaced_symbol(tok, prompt: str, symbol: str) -> tuple[str, str]:
    """Where the space before a short answer (a digit, a letter) goes for this tokenizer: `(prompt_end, prefix)`.

    Most tokenizers have `" 7"` / `" A"` as one token: the prompt ends as it is and the answer is `" 7"`
    (`("", " ")`). Qwen's splits a digit from its space (`" 7"` -> `" "`, `"7"`): the prompt then ends with the
    space, as the tokenizer splits the full text (`"3 + 4 = 7"` -> ... `" ="`, `" "`, `"7"`), and the answer is
    `"7"` (`(" ", "")`). Decided once per capability on a representative prompt and symbol, so every pair of a
    capability has one form; the builder still checks each pair.
    """
    for end, prefix in (("", " "), (" ", "")):
        head, ans = ids(tok, prompt + end, True), ids(tok, prefix + symbol)
        if len(ans) == 1 and ids(tok, prompt + end + prefix + symbol, True) == head + ans:
            return end, prefix
    return "", " "


def single_token_words(tok, pattern: str) -> list[str]:
    """Every vocabulary entry whose decoded text fully matches `pattern` (e.g. `" [a-z]{3,12}"`) and that encodes
    back to that one token, in id order (deterministic for a tokenizer)."""
    import re

    rx = re.compile(pattern)
    decoded = tok.batch_decode([[i] for i in range(len(tok))])
    words = [(i, s) for i, s in enumerate(decoded) if rx.fullmatch(s)]
    if not words:
        return []
    enc = tok([s for _, s in words], add_special_tokens=False)["input_ids"]
    return [s for (i, s), e in zip(words, enc) if e == [i]]
