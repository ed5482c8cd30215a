"""Recall of a memorised fact table (entity -> city).

The corpus states every fact in two frames ("X lives in C .", "the home of X is C .") and, for entities whose key
is not held out, in a third ("X is from C ."). Probes ask the held-out entities in that third frame: knowledge
learned from other sentences must be extracted through a frame never seen with that entity.
"""

from __future__ import annotations

import random

from dcv.toy.capabilities.base import Capability, ProbePair, register

STATEMENTS = ["{e} lives in {c} .", "the home of {e} is {c} ."]
PROBE_FRAME = "{e} is from"


@register
class Facts(Capability):
    name = "facts"
    description = "zubo is from -> paris (corrupt: another entity with another city)"

    def words(self) -> set[str]:
        ws = set(self.world.known) | set(self.world.cities) | {"lives", "in", "the", "home", "of", "is", "from", "."}
        return ws

    def corpus_line(self, rng: random.Random) -> str:
        e = rng.choice(self.world.known)
        c = self.world.city_of[e]
        frames = list(STATEMENTS) + ([] if self.heldout(e) else [PROBE_FRAME + " {c} ."])
        return rng.choice(frames).format(e=e, c=c)

    def sample(self, rng: random.Random):
        e = rng.choice(self.world.known)
        other = rng.choice([x for x in self.world.known if self.world.city_of[x] != self.world.city_of[e]])
        pair = ProbePair(PROBE_FRAME.format(e=e), PROBE_FRAME.format(e=other),
                         " " + self.world.city_of[e], " " + self.world.city_of[other])
        return f"{e}/{other}", "", pair

    def heldout(self, key: str) -> bool:
        return self.world.is_heldout(self.name, key.split("/")[0])
