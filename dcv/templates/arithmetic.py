"""Single-digit arithmetic: "3 + 4 =" -> " 7" (or, for tokenizers that split a digit from its space, as Qwen's
does, "3 + 4 = " -> "7"); the corruption changes one operand so the result is another single digit, which is the
distractor ("3 + 5 =" -> 8).

Every sum and difference of digits 0..9 whose result is a digit, with every such change of either operand, is a
candidate. Where the space goes is decided once per tokenizer (`spaced_symbol`).
"""

from __future__ import annotations

import random

from dcv.probe_pair import ProbePair
from dcv.templates.base import TemplateCapability, register, spaced_symbol

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b}
FRAMES = ["{a} {op} {b} =", "Question: {a} {op} {b} = ? Answer:"]


@register
class Arithmetic(TemplateCapability):
    name = "arithmetic"
    description = "3 + 4 = -> 7 (corrupt: an operand changed, 3 + 5 = -> 8)"

    def candidates(self, tok, rng: random.Random) -> list[ProbePair]:
        end, prefix = spaced_symbol(tok, FRAMES[0].format(a=3, op="+", b=4), "7")
        digits = range(10)
        out = []
        for frame in FRAMES:
            for op, f in OPS.items():
                for a in digits:
                    for b in digits:
                        r = f(a, b)
                        if not 0 <= r <= 9:
                            continue
                        changed = [(x, b) for x in digits if x != a] + [(a, y) for y in digits if y != b]
                        for a2, b2 in changed:
                            r2 = f(a2, b2)
                            if 0 <= r2 <= 9 and r2 != r:
                                out.append(ProbePair(frame.format(a=a, op=op, b=b) + end,
                                                     frame.format(a=a2, op=op, b=b2) + end,
                                                     f"{prefix}{r}", f"{prefix}{r2}"))
        return out
