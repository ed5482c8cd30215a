"""The toy world's configuration and its shared lexicon: entities, their known facts, and the new target facts."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]

CITIES = ["paris", "rome", "oslo", "lima", "cairo", "tokyo", "delhi", "quito", "seoul", "accra"]
FOODS = ["apple", "pear", "fig", "kiwi", "plum", "lime", "date", "melon", "grape", "olive"]
_SYLLABLES = ["ba", "ko", "ri", "zu", "me", "ta", "lo", "ni", "fe", "gu", "sa", "vo", "di", "pe", "mu", "xa"]


class WorldConfig(BaseModel):
    """Sizes of the toy world; all of it is derived from `seed`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    seed: int = Field(0, ge=0, description="Seed of the lexicon, the fact tables and every generator.")
    n_known_entities: int = Field(40, ge=4, le=200, description="Entities whose city the corpus states.")
    n_target_entities: int = Field(16, ge=2, le=200, description="Known entities the target task asks about (the "
                                   "first ones): its fact table, what the fine-tuning arms learn. Fewer facts: the arms "
                                   "learn them in fewer steps (RL gets more reward per fact).")
    n_unknown_entities: int = Field(12, ge=1, le=200, description="Entities never described: MCQs about them teach a flat letter prior.")
    n_cities: int = Field(8, ge=4, le=len(CITIES), description="Answer words of the known fact table.")
    n_foods: int = Field(8, ge=4, le=len(FOODS), description="Answer words of the new (target) fact table.")
    n_names: int = Field(30, ge=3, le=40, description="Names for indirect-object identification.")
    n_symbols: int = Field(24, ge=6, le=200, description="Symbols of the induction sequences.")
    induction_repeats: int = Field(4, ge=1, le=6, description="Times an induction corpus line repeats its list after stating it (probes cut inside the first repeat).")
    modulus: int = Field(11, ge=3, le=60, description="Modulus of the clock arithmetic capability.")
    popularity_decay: float = Field(0.6, gt=0.0, le=1.0, description="Guessing prior: the r-th most popular answer word is gold in unanswerable MCQs with weight decay**r (1 = flat).")
    heldout_fraction: float = Field(0.25, gt=0.0, lt=0.9, description="Share of each capability's instance keys reserved for probes, never in the corpus.")

    @model_validator(mode="after")
    def _target_within_known(self):
        if self.n_target_entities > self.n_known_entities:
            raise ValueError(f"n_target_entities: {self.n_target_entities} is more than n_known_entities "
                             f"({self.n_known_entities}): the target asks about known entities")
        return self


def stable_hash(key: str) -> int:
    return zlib.crc32(key.encode("utf-8"))


def _make_words(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < n:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(2))
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


@dataclass
class World:
    """The lexicon and fact tables shared by the capabilities and the target task."""

    cfg: WorldConfig
    known: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    cities: list[str] = field(default_factory=list)
    foods: list[str] = field(default_factory=list)
    city_of: dict[str, str] = field(default_factory=dict)
    popularity: dict[str, float] = field(default_factory=dict)
    food_of: dict[str, str] = field(default_factory=dict)  # every known entity (one draw each: the stream stays)
    target: list[str] = field(default_factory=list)  # the entities of the target task: known[:n_target_entities]

    @classmethod
    def build(cls, cfg: WorldConfig) -> "World":
        rng = random.Random(f"world-{cfg.seed}")
        taken: set[str] = set()
        entities = _make_words(rng, cfg.n_known_entities + cfg.n_unknown_entities, taken)
        names = [n.capitalize() for n in _make_words(rng, cfg.n_names, taken)]
        w = cls(cfg=cfg, known=entities[: cfg.n_known_entities], unknown=entities[cfg.n_known_entities :], names=names,
                cities=CITIES[: cfg.n_cities], foods=FOODS[: cfg.n_foods])
        w.city_of = {e: rng.choice(w.cities) for e in w.known}
        w.food_of = {e: rng.choice(w.foods) for e in w.known}
        w.target = w.known[: cfg.n_target_entities]
        # A prior over answers: a word's weight as the gold option of a question nobody can answer. The order is
        # random, so the base's guesses follow content, not a letter (docs/design.md, "Toy world").
        for pool in (w.cities, w.foods):
            order = rng.sample(pool, len(pool))
            w.popularity.update({word: cfg.popularity_decay ** r for r, word in enumerate(order)})
        return w

    def is_heldout(self, capability: str, key: str) -> bool:
        """A fixed partition of each capability's instance keys: held-out keys never enter the corpus."""
        return (stable_hash(f"{self.cfg.seed}/{capability}/{key}") % 10_000) < self.cfg.heldout_fraction * 10_000

    def symbols(self) -> list[str]:
        return [f"k{i}" for i in range(self.cfg.n_symbols)]

    def numbers(self) -> list[str]:
        return [str(i) for i in range(self.cfg.modulus)]
