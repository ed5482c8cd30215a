"""Induction on repeated random tokens (Olsson et al. 2022): a random sequence of single-token words drawn from
the tokenizer's own vocabulary, then its first j+1 tokens again; the next token is the sequence's token j+1.

Corruption: that token's first occurrence is replaced by a fresh word, so the repeat has nothing to copy from;
the distractor is the fresh word. The pool is every vocabulary entry that decodes to a space and 3-12 lower-case
letters and encodes back to itself (no word list needed: any tokenizer has its own).
"""

from __future__ import annotations

import random

from dcv.probe_pair import ProbePair
from dcv.templates.base import TemplateCapability, register, single_token_words

WORD = r" [a-z]{3,12}"
MIN_LEN, MAX_LEN = 6, 10
N_CANDIDATES = 4000


@register
class Induction(TemplateCapability):
    name = "induction"
    description = "apple river stone lamp ... apple river -> stone (corrupt: the first stone -> a fresh word)"

    def candidates(self, tok, rng: random.Random) -> list[ProbePair]:
        pool = single_token_words(tok, WORD)
        if len(pool) < MAX_LEN + 1:
            return []
        out = []
        for _ in range(N_CANDIDATES):
            n = rng.randint(MIN_LEN, MAX_LEN)
            seq = rng.sample(pool, n + 1)
            seq, fresh = seq[:n], seq[n]
            j = rng.randint(1, n - 2)  # the prompt ends at seq[j] of the repeat (two or more tokens in)
            corrupted = seq[: j + 1] + [fresh] + seq[j + 2 :]
            out.append(ProbePair("".join(seq + seq[: j + 1]), "".join(corrupted + seq[: j + 1]),
                                 seq[j + 1], fresh))
        return out
