"""The probe-pair record every probe source shares (the toy world's capabilities and the templates for real
tokenizers): a clean prompt, its corruption, and the single next tokens compared at the last prompt token."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ProbePair:
    """A clean prompt and its corruption; `answer`/`distractor` are the single next tokens (with leading space)."""

    clean: str
    corrupt: str
    answer: str
    distractor: str

    def to_json(self) -> dict:
        return asdict(self)
