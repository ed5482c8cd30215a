"""Indirect-object identification: "when Mary and John went ..., John gave a drink to" -> Mary.

Held-out instances are unordered name pairs never seen together in the corpus; the corruption replaces the
second mention of the subject by a third name (the ABC corruption of Wang et al. 2022).
"""

from __future__ import annotations

import random

from dcv.toy.capabilities.base import Capability, ProbePair, register

TEMPLATES = [
    "when {A} and {B} went to the {place} , {S} gave a {obj} to",
    "after {A} and {B} got to the {place} , {S} handed the {obj} to",
    "while {A} and {B} were at the {place} , {S} passed a {obj} to",
]
PLACES = ["store", "park", "school", "office"]
OBJECTS = ["drink", "book", "ball", "key"]


@register
class IOI(Capability):
    name = "ioi"
    description = "when Ana and Bo went to the park , Bo gave a ball to -> Ana (corrupt: second Bo -> Cy)"

    def words(self) -> set[str]:
        ws = set(self.world.names) | set(PLACES) | set(OBJECTS)
        for t in TEMPLATES:
            ws |= {w for w in t.split() if not w.startswith("{")}
        return ws

    def sample(self, rng: random.Random):
        io, s, c = rng.sample(self.world.names, 3)
        tmpl = rng.choice(TEMPLATES)
        first, second = (io, s) if rng.random() < 0.5 else (s, io)
        kw = dict(A=first, B=second, place=rng.choice(PLACES), obj=rng.choice(OBJECTS))
        clean = tmpl.format(S=s, **kw)
        corrupt = tmpl.format(S=c, **kw)
        key = "/".join(sorted((io, s)))
        return key, f"{clean} {io}", ProbePair(clean, corrupt, " " + io, " " + s)
