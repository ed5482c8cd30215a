"""Induction: a random sequence of distinct symbols repeats; predict the next symbol of the repeat.

A corpus line states the list and then repeats it `induction_repeats` times; probes cut inside the first repeat.
Several repeats put many induction-predictable tokens in every line, so induction heads form early and reliably
(with one repeat they formed late, at a step that varied with the seed, and the capabilities built on copying
waited for them).
"""

from __future__ import annotations

import random

from dcv.toy.capabilities.base import Capability, ProbePair, register


@register
class Induction(Capability):
    name = "induction"
    description = "list : k3 k7 k1 k9 k3 k7 -> k1 (corrupt: the first k1 replaced by a fresh symbol)"
    min_len, max_len = 4, 7

    def words(self) -> set[str]:
        return {"list", ":"} | set(self.world.symbols())

    def sample(self, rng: random.Random):
        syms = self.world.symbols()
        n = rng.randint(self.min_len, self.max_len)
        seq = rng.sample(syms, n)
        j = rng.randint(1, n - 2)  # prompt ends at seq[j] of the repeat (two or more tokens in); answer seq[j+1]
        fresh = rng.choice([s for s in syms if s not in seq])
        corrupted = list(seq)
        corrupted[j + 1] = fresh
        head = "list :"
        clean = f"{head} {' '.join(seq)} {' '.join(seq[: j + 1])}"
        corrupt = f"{head} {' '.join(corrupted)} {' '.join(corrupted[: j + 1])}"
        line = f"{head} {' '.join(seq)}" + f" {' '.join(seq)}" * self.world.cfg.induction_repeats
        return " ".join(seq), line, ProbePair(clean, corrupt, " " + seq[j + 1], " " + fresh)
