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


def build_probe_sets(world: World, names: list[str], n_validation: int, n_probes: int
                     ) -> dict[str, tuple[list[ProbePair], list[ProbePair]]]:
    """Per capability: (validation pairs for the base's own check, probe pairs for circuits and forgetting).

    Both are held out from the corpus and disjoint from each other. The validation draw comes first and does not
    depend on `n_probes`, so changing the probe count leaves the validation set (and the base) untouched.
    """
    out = {}
    for name, cap in capabilities(world, names).items():
        val = cap.heldout_pairs(random.Random(f"validation-{world.cfg.seed}-{name}"), n_validation)
        probes = cap.heldout_pairs(random.Random(f"probes-{world.cfg.seed}-{name}"), n_probes,
                                   exclude={k for k, _ in val})
        out[name] = ([p for _, p in val], [p for _, p in probes])
    return out
