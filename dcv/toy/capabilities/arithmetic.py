"""Clock arithmetic: counting by k modulo p, "count four by 3 : 1 4 7" -> 10 (mod 11).

Each line states how many numbers it holds, so a probe cut before the end has a number as its only continuation.
Every (number, step) sum occurs in the corpus; held-out instances are (step, start, length) counts never in it.
The corruption starts the same count elsewhere, so the answer moves to another number.
"""

from __future__ import annotations

import random

from dcv.toy.capabilities.base import Capability, ProbePair, register

STEPS = (1, 2, 3)
LENGTHS = {3: "three", 4: "four", 5: "five", 6: "six"}


@register
class Arithmetic(Capability):
    name = "arithmetic"
    description = "count four by 3 : 1 4 7 -> 10 mod p (corrupt: the same count from another start)"

    def words(self) -> set[str]:
        return {"count", "by", ":"} | set(LENGTHS.values()) | set(self.world.numbers())

    def sample(self, rng: random.Random):
        p = self.world.cfg.modulus
        k, start, length = rng.choice(STEPS), rng.randrange(p), rng.choice(list(LENGTHS))
        other = rng.choice([s for s in range(p) if s != start])
        n = rng.randint(2, length - 1)  # numbers shown in the probe
        seq = [(start + i * k) % p for i in range(length)]
        cor = [(other + i * k) % p for i in range(length)]
        fmt = lambda xs: f"count {LENGTHS[length]} by {k} : " + " ".join(map(str, xs))  # noqa: E731
        return f"{k}/{start}/{length}", fmt(seq), ProbePair(fmt(seq[:n]), fmt(cor[:n]), f" {seq[n]}", f" {cor[n]}")
