"""Greater-than (Hanna et al. 2023) for tokenizers that split digits one per token (Qwen, Llama, Mistral, ...):
"The war lasted from the year 1739 to the year 17" -> the tens digit of a later year.

With digits one per token the next token is the end year's tens digit, and one digit is the answer and one the
distractor. The start year is XX t 9 (tens digit t in 1..8, ones digit 9). Then:

- answer `t+1`: every year XX(t+1)y is later than XXt9, whatever y comes next: the smallest tens digit that is
  sure to be greater (and the model's natural continuation: the next decade);
- distractor `t`: every year XXty is at most XXt9: the largest tens digit that is sure not to be greater.

The pair straddles the comparison's boundary exactly; with another ones digit x < 9 the digit t would be right or
wrong depending on the ones digit still to come, so no single-digit pair would be that tight. The corruption is
Hanna et al.'s "01" start year (XX01): there every tens digit >= 1 gives a later year, so the distractor's verdict
flips from earlier to later while the answer stays later, and nothing in the prompt favours the answer. (A full
flip, answer wrong and distractor right, is impossible by changing the start year: greater-than is monotone in
the digit, so any start year that makes t later also makes t+1 later.) Centuries XX are 11..17 as in the paper.
A tokenizer with multi-digit tokens (GPT-2's "17", "39") fails `not_next_token` or the length check and is
reported as such.
"""

from __future__ import annotations

import random

from dcv.probe_pair import ProbePair
from dcv.templates.base import TemplateCapability, register

# Event nouns in the style of Hanna et al.'s list (who used nouns that are single GPT-2 tokens).
NOUNS = [
    "war", "accord", "affair", "agreement", "attack", "campaign", "captivity", "conflict", "conspiracy",
    "construction", "contract", "cooperation", "deal", "decline", "dispute", "dynasty", "effort", "epidemic",
    "exchange", "expansion", "expedition", "friendship", "invasion", "journey", "marriage", "negotiation",
    "occupation", "plague", "project", "rebellion", "reign", "rivalry", "siege", "strike", "trial", "voyage",
]
TEMPLATE = "The {noun} lasted from the year {century}{start} to the year {century}"
CENTURIES = range(11, 18)


@register
class GreaterThan(TemplateCapability):
    name = "greater_than"
    description = "The war lasted from the year 1739 to the year 17 -> 4, distractor 3 (corrupt: start year 1701)"

    def candidates(self, tok, rng: random.Random) -> list[ProbePair]:
        out = []
        for noun in NOUNS:
            for century in CENTURIES:
                corrupt = TEMPLATE.format(noun=noun, century=century, start="01")
                for t in range(1, 9):
                    clean = TEMPLATE.format(noun=noun, century=century, start=f"{t}9")
                    out.append(ProbePair(clean, corrupt, str(t + 1), str(t)))
        return out
