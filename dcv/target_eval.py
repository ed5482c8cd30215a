"""Target-task evaluation by greedy decoding and the shared answer parser."""

from __future__ import annotations

from collections import Counter, defaultdict

import torch

from dcv.answers import LETTERS, parse_choice, row_correct


@torch.no_grad()
def greedy_completions(model, tok, prompts: list[str], max_new_tokens: int = 4, batch_size: int = 128) -> list[str]:
    """Greedy continuations, prompts grouped by token length so no padding enters the computation."""
    device = next(model.parameters()).device
    enc = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    groups: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(enc):
        groups[len(e)].append(i)
    out: list[str] = [""] * len(prompts)
    for length in sorted(groups):
        idx = groups[length]
        for s in range(0, len(idx), batch_size):
            part = idx[s : s + batch_size]
            ids = torch.tensor([enc[i] for i in part], device=device)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            for j, i in enumerate(part):
                out[i] = tok.decode(gen[j, length:], skip_special_tokens=True)
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
