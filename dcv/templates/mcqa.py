"""Multiple-choice answering with letters A-D, in the layout of MMLU and SciKnowEval:

    Question: What is the capital of France?
    A. Berlin
    B. Paris
    C. Rome
    D. Madrid
    Answer:                                  -> " B"

The corruption moves the gold option: it swaps places with another option, whose letter is the distractor (the
right letter of the corrupted prompt). Questions ask capitals of countries and countries of capitals
(`dcv.templates.capitals.COUNTRIES`), facts any pretrained model knows, so the capability measured is reading
the options and emitting the right letter. Where the space before the letter goes is decided per tokenizer.
"""

from __future__ import annotations

import random

from dcv.answers import LETTERS
from dcv.probe_pair import ProbePair
from dcv.templates.base import TemplateCapability, register, spaced_symbol
from dcv.templates.capitals import COUNTRIES, in_prose

# (question, which field of (country, capital) the options are)
QUESTIONS = [("What is the capital of {c}?", 1), ("{cap} is the capital of which country?", 0)]
N_CANDIDATES = 4000


def mcq_text(question: str, options: list[str]) -> str:
    opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    return f"Question: {question}\n{opts}\nAnswer:"


@register
class MCQA(TemplateCapability):
    name = "mcqa"
    description = "Question: What is the capital of France? A. Berlin B. Paris ... Answer: -> B (corrupt: gold moved)"

    def candidates(self, tok, rng: random.Random) -> list[ProbePair]:
        end, prefix = spaced_symbol(tok, mcq_text("What is 1 + 1?", ["3", "2", "4", "5"]), "B")
        out = []
        for _ in range(N_CANDIDATES):
            question, field = rng.choice(QUESTIONS)
            k = rng.randrange(len(COUNTRIES))
            c, cap = COUNTRIES[k]
            others = rng.sample([x for i, x in enumerate(COUNTRIES) if i != k], 3)
            opts = [(c, cap)[field]] + [o[field] for o in others]
            rng.shuffle(opts)
            g = opts.index((c, cap)[field])
            j = rng.choice([i for i in range(4) if i != g])
            swapped = list(opts)
            swapped[g], swapped[j] = swapped[j], swapped[g]
            q = question.format(c=in_prose(c), cap=cap)
            out.append(ProbePair(mcq_text(q, opts) + end, mcq_text(q, swapped) + end,
                                 prefix + LETTERS[g], prefix + LETTERS[j]))
        return out
