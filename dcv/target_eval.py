"""Target-task evaluation: greedy completions of the target prompts, judged by the shared rule (`dcv.answers`)."""

from __future__ import annotations

from collections import Counter

import torch

from dcv.answers import LETTERS, parse_choice, row_correct
from dcv.batching import encode, equal_length_batches


@torch.no_grad()
def greedy_completions(model, tok, prompts: list[str], max_new_tokens: int = 4, batch_size: int = 128,
                       special: bool = True) -> list[str]:
    """Greedy continuations, prompts grouped by token length so no padding enters the computation (`special`:
    add the tokenizer's special tokens; False for chat renderings)."""
    device = next(model.parameters()).device
    enc = encode(tok, prompts, special)
    out: list[str] = [""] * len(prompts)
    for part in equal_length_batches([len(e) for e in enc], batch_size):
        n = len(enc[part[0]])
        ids = torch.tensor([enc[i] for i in part], device=device)
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for j, i in enumerate(part):
            out[i] = tok.decode(gen[j, n:], skip_special_tokens=True)
    return out


def score_target(rows: list[dict], completions: list[str]) -> dict:
    """Accuracy (any correct form counts: the rule of `dcv.answers`, the RL reward's too) and the
    distribution of chosen letters (None = unparsable or a free-text row)."""
    chosen = [parse_choice(c, r["choices"]) if r.get("choices") else None for r, c in zip(rows, completions)]
    correct = sum(1 for r, c in zip(rows, completions) if row_correct(r, c))
    counts = Counter(LETTERS[c] if c is not None else "none" for c in chosen)
    n = len(rows)
    return {"accuracy": correct / n,
            "letter_distribution": {k: counts.get(k, 0) / n for k in LETTERS[:4] + ["none"]}}
