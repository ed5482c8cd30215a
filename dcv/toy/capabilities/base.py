"""The interface every toy capability implements (the probe-pair record lives in `dcv.probe_pair`)."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod

from dcv.probe_pair import ProbePair  # noqa: F401  (defined generically; re-exported for the toy's modules)
from dcv.toy.world import World


class Capability(ABC):
    """A prior capability: pretraining lines and held-out clean/corrupted probe pairs.

    Every instance has a key; `World.is_heldout` splits keys once, so corpus and probes never share an instance.
    """

    name: str = ""
    description: str = ""

    def __init__(self, world: World):
        self.world = world

    @abstractmethod
    def words(self) -> set[str]:
        """Every word the capability's text can contain."""

    @abstractmethod
    def sample(self, rng: random.Random) -> tuple[str, str, ProbePair]:
        """One random instance: (key, full pretraining line, probe pair of that instance)."""

    def heldout(self, key: str) -> bool:
        return self.world.is_heldout(self.name, key)

    def corpus_line(self, rng: random.Random) -> str:
        """A pretraining line whose key is not held out."""
        while True:
            key, line, _ = self.sample(rng)
            if not self.heldout(key):
                return line

    def extra_corpus_line(self, rng: random.Random) -> str | None:
        """Optional second kind of line (for example MCQs nobody can answer); None if the capability has none."""
        return None

    def heldout_pairs(self, rng: random.Random, n: int, exclude: set[str] | None = None) -> list[tuple[str, ProbePair]]:
        """`n` distinct probe pairs of held-out instances; `exclude` holds (clean, corrupt) identities to avoid."""
        seen = set(exclude or ())
        out: list[tuple[str, ProbePair]] = []
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 2000 * (n + 10):
                raise ValueError(f"capability {self.name}: only {len(out)} distinct held-out probes exist, {n} asked")
            key, _, pair = self.sample(rng)
            ident = f"{pair.clean}|{pair.corrupt}"
            if ident in seen or not self.heldout(key):
                continue
            seen.add(ident)
            out.append((ident, pair))
        return out


REGISTRY: dict[str, type[Capability]] = {}


def register(cls: type[Capability]) -> type[Capability]:
    REGISTRY[cls.name] = cls
    return cls
