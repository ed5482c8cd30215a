"""The pretraining corpus (a mix of every capability's lines) and the held-out probe sets."""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dcv.toy.capabilities import REGISTRY, Capability, ProbePair
from dcv.toy.world import World


class CorpusConfig(BaseModel):
    """How many pretraining lines, and each capability's share of them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    n_lines: int = Field(60000, ge=100, le=10_000_000, description="Lines of pretraining text.")
    mix: dict[str, float] = Field(
        default_factory=lambda: {"induction": 2.5, "ioi": 2.0, "facts": 1.0, "arithmetic": 0.8, "mcqa": 3.0},
        description="Relative share of each capability's lines.")
    unanswerable_share: float = Field(0.33, ge=0.0, le=5.0,
                                      description="Lines of MCQs nobody can answer, relative to the MCQA capability's share.")

    @field_validator("mix")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [c for c in v if c not in REGISTRY]
        if bad or not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError(f"needs non-negative shares of known capabilities {sorted(REGISTRY)}; got {v}")
        return v


def capabilities(world: World, names: list[str] | None = None) -> dict[str, Capability]:
    names = list(REGISTRY) if names is None else names
    return {n: REGISTRY[n](world) for n in names}


def build_corpus(world: World, cfg: CorpusConfig) -> list[str]:
    caps = capabilities(world, list(cfg.mix))
    rng = random.Random(f"corpus-{world.cfg.seed}")
    kinds: list[tuple[str, bool]] = [(n, False) for n in cfg.mix] + [("mcqa", True)]
    weights = [cfg.mix[n] for n in cfg.mix] + [cfg.mix.get("mcqa", 0.0) * cfg.unanswerable_share]
    lines = []
    for name, extra in rng.choices(kinds, weights=weights, k=cfg.n_lines):
        line = caps[name].extra_corpus_line(rng) if extra else caps[name].corpus_line(rng)
        lines.append(line if line is not None else caps[name].corpus_line(rng))
    return lines


def build_probe_sets(world: World, names: list[str], sizes: dict[str, int]) -> dict[str, dict[str, list[ProbePair]]]:
    """Per capability, disjoint splits of held-out probe pairs (`sizes`: split name -> pairs, in drawing order,
    e.g. validation, probes, protection).

    Every split is held out from the corpus and disjoint from the splits before it. Each split has its own random
    stream and depends only on the splits drawn before it, so growing a later split (or adding one) leaves the
    earlier ones, and the base trained on the validation split, untouched.
    """
    out = {}
    for name, cap in capabilities(world, names).items():
        taken: set[str] = set()
        out[name] = {}
        for split, n in sizes.items():
            pairs = cap.heldout_pairs(random.Random(f"{split}-{world.cfg.seed}-{name}"), n, exclude=taken)
            taken |= {k for k, _ in pairs}
            out[name][split] = [p for _, p in pairs]
    return out
