"""The new target task: multiple-choice questions about a fact table the base never saw (what each of the world's
target entities, `World.target`, eats).

Train and eval rows ask about the same facts with disjoint (entity, option order) arrangements. Any of the
completion forms of `dcv.answers.FORMS` is correct when it names the gold option (see `dcv.answers.parse_choice`).
"""

from __future__ import annotations

import random

from dcv.answers import LETTERS
from dcv.toy.capabilities.mcqa import EAT_Q, options_with
from dcv.toy.mcq import mcq_prompt
from dcv.toy.world import World


def make_rows(world: World, n_train: int, n_eval: int) -> tuple[list[dict], list[dict]]:
    """Target train/eval rows (`prompt`, `answer` letter, `choices`), arrangements disjoint between splits."""
    rng = random.Random(f"target-{world.cfg.seed}")
    seen: set[str] = set()
    rows: list[dict] = []
    limit = 200 * (n_train + n_eval)
    while len(rows) < n_train + n_eval:
        limit -= 1
        if limit < 0:
            raise ValueError(f"target: only {len(rows)} distinct questions exist, {n_train + n_eval} asked")
        e = rng.choice(world.target)
        opts = options_with(rng, world.food_of[e], world.foods)
        key = f"{e}/{'/'.join(opts)}"
        if key in seen:
            continue
        seen.add(key)
        rows.append({"prompt": mcq_prompt(EAT_Q.format(e=e), opts), "answer": LETTERS[opts.index(world.food_of[e])],
                     "choices": opts})
    return rows[:n_train], rows[n_train:]
