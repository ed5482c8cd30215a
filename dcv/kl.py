"""Forward KL between a base policy and a fine-tuned one at the answer position: E_x KL(pi0(.|x) || pi(.|x)).

The answer position is the last prompt token: the distribution over the first completion token, the one that decides
which answer (and in which form) a model gives. This is RL's Razor's predictor of forgetting, measured on the target
eval prompts (shared/DESIGN.md, "Forgetting"). Prompts are grouped by token length, so no padding enters the
computation and the result does not depend on the batch composition.
"""

from __future__ import annotations

from collections import defaultdict

import torch


@torch.no_grad()
def answer_logprobs(model, tok, prompts: list[str], batch_size: int = 128) -> torch.Tensor:
    """log softmax of the next-token logits after each prompt: [n_prompts, vocab], float32 on the CPU."""
    if not prompts:
        raise ValueError("answer_logprobs: no prompts")
    device = next(model.parameters()).device
    enc = [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]
    groups: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(enc):
        groups[len(e)].append(i)
    out: torch.Tensor | None = None
    for length in sorted(groups):
        idx = groups[length]
        for s in range(0, len(idx), batch_size):
            part = idx[s : s + batch_size]
            ids = torch.tensor([enc[i] for i in part], device=device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1, :].float()
            lp = torch.log_softmax(logits, dim=-1).cpu()
            if out is None:
                out = torch.empty(len(prompts), lp.shape[-1])
            out[part] = lp
    return out


def forward_kl(base_logprobs: torch.Tensor, logprobs: torch.Tensor) -> float:
    """Mean over prompts of KL(pi0 || pi) = sum_v pi0(v) (log pi0(v) - log pi(v)), in nats."""
    if base_logprobs.shape != logprobs.shape:
        raise ValueError(f"forward_kl: shapes differ {tuple(base_logprobs.shape)} vs {tuple(logprobs.shape)}")
    p0 = base_logprobs.exp()
    kl = (p0 * (base_logprobs - logprobs)).sum(-1)
    return float(kl.clamp_min(0.0).mean())
