"""Multiple-choice answering about the memorised facts: pick the letter of an entity's city.

Held-out instances are (entity, option order) arrangements never in the corpus. The corpus also holds MCQs
nobody can answer (unknown entities, and the never-stated "eat" relation) whose gold follows only a popularity
prior over the option words: the base learns to guess by content, spread over the letters, so that RL on a new
MCQ task starts with reward variance.
"""

from __future__ import annotations

import random

from dcv.answers import LETTERS
from dcv.toy.capabilities.base import Capability, ProbePair, register
from dcv.toy.mcq import MCQ_WORDS, mcq_prompt

LIVE_Q = "where does {e} live"
EAT_Q = "what does {e} eat"


def options_with(rng: random.Random, gold: str, pool: list[str]) -> list[str]:
    opts = [gold] + rng.sample([p for p in pool if p != gold], 3)
    rng.shuffle(opts)
    return opts


@register
class MCQA(Capability):
    name = "mcqa"
    description = "question : where does zubo live ? A ) oslo B ) paris ... answer : -> B (corrupt: gold moved)"

    def words(self) -> set[str]:
        return (MCQ_WORDS | {"where", "does", "live", "what", "eat"} | set(self.world.known) | set(self.world.unknown)
                | set(self.world.cities) | set(self.world.foods))

    def sample(self, rng: random.Random):
        e = rng.choice(self.world.known)
        gold = self.world.city_of[e]
        opts = options_with(rng, gold, self.world.cities)
        g = opts.index(gold)
        swapped = list(opts)
        j = rng.choice([i for i in range(4) if i != g])
        swapped[g], swapped[j] = swapped[j], swapped[g]
        q = LIVE_Q.format(e=e)
        clean, corrupt = mcq_prompt(q, opts), mcq_prompt(q, swapped)
        return f"{e}/{'/'.join(opts)}", f"{clean} {LETTERS[g]}", ProbePair(clean, corrupt, " " + LETTERS[g], " " + LETTERS[j])

    def extra_corpus_line(self, rng: random.Random) -> str:
        """An MCQ nobody can answer; its gold is drawn by the world's popularity prior over the options."""
        if rng.random() < 0.5:
            q, pool = LIVE_Q.format(e=rng.choice(self.world.unknown)), self.world.cities
        else:
            q, pool = EAT_Q.format(e=rng.choice(self.world.known + self.world.unknown)), self.world.foods
        opts = rng.sample(pool, 4)
        gold = rng.choices(range(4), weights=[self.world.popularity[o] for o in opts])[0]
        return f"{mcq_prompt(q, opts)} {LETTERS[gold]}"
