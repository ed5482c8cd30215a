"""Forward KL between a base policy and a fine-tuned one: E_x KL(pi0(.|x) || pi(.|x)), exactly at the answer position
(`forward_kl`) and as a sampled-sequence estimate over whole completions (`sequence_kl`).

The answer position is the last prompt token: the distribution over the first completion token, the one that decides
which answer (and in which form) a model gives. This is RL's Razor's predictor of forgetting, measured on the target
eval prompts (docs/design.md, "Forgetting"). Prompts are grouped by token length, so no padding enters the
computation and the result does not depend on the batch composition.
"""

from __future__ import annotations

import torch

from dcv.batching import encode, equal_length_batches


@torch.no_grad()
def answer_logprobs(model, tok, prompts: list[str], batch_size: int = 128, special: bool = True) -> torch.Tensor:
    """log softmax of the next-token logits after each prompt: [n_prompts, vocab], float32 on the CPU (`special`:
    as `dcv.batching.encode`)."""
    if not prompts:
        raise ValueError("answer_logprobs: no prompts")
    device = next(model.parameters()).device
    enc = encode(tok, prompts, special)
    out: torch.Tensor | None = None
    for part in equal_length_batches([len(e) for e in enc], batch_size):
        ids = torch.tensor([enc[i] for i in part], device=device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1).logits[:, -1, :].float()
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


# Sampled-sequence estimate, for answers longer than one token: KL(pi0 || pi) = E_{y ~ pi0(.|x)} [log pi0(y|x) - log pi(y|x)]
# over whole completions y. The completions are drawn once from the base (a seeded generator, so the estimate is
# deterministic) and scored under each checkpoint by teacher forcing.


@torch.no_grad()
def sample_completions(model, tok, prompts: list[str], n_samples: int, max_new_tokens: int, seed: int = 0,
                       temperature: float = 1.0, batch_size: int = 128, special: bool = True
                       ) -> list[tuple[list[int], list[int]]]:
    """`n_samples` completions per prompt sampled from `model`: (prompt ids, completion ids) pairs, each completion
    cut after the first end-of-sequence token. Token by token with a private generator: no global RNG is touched;
    `batch_size` prompts (times `n_samples` rows) per forward."""
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    eos = tok.eos_token_id
    enc = encode(tok, prompts, special)
    out: dict[int, list[list[int]]] = {}
    for part in equal_length_batches([len(e) for e in enc], batch_size):
        idx = [i for i in part for _ in range(n_samples)]
        ids = torch.tensor([enc[i] for i in idx], device=device)
        done = torch.zeros(len(idx), dtype=torch.bool)
        new: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            out_ = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1)
            logits = out_.logits[:, -1, :].float().cpu()
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
            new.append(nxt)
            done |= nxt == eos if eos is not None else done
            ids = torch.cat([ids, nxt[:, None].to(device)], dim=1)
            if bool(done.all()):
                break
        toks = torch.stack(new, dim=1).tolist()
        for row, i in enumerate(idx):
            t = toks[row]
            if eos is not None and eos in t:
                t = t[: t.index(eos) + 1]
            out.setdefault(i, []).append(t)
    return [(enc[i], c) for i in range(len(prompts)) for c in out[i]]


@torch.no_grad()
def completion_logprobs(model, pairs: list[tuple[list[int], list[int]]], batch_size: int = 128) -> torch.Tensor:
    """log pi(y|x) summed over the completion tokens of each (prompt ids, completion ids) pair: [n_pairs]."""
    device = next(model.parameters()).device
    out = torch.zeros(len(pairs))
    for part in equal_length_batches([(len(p), len(c)) for p, c in pairs], batch_size):
        lp, lc = len(pairs[part[0]][0]), len(pairs[part[0]][1])
        ids = torch.tensor([pairs[i][0] + pairs[i][1] for i in part], device=device)
        # the vocabulary projection of the positions that predict the completion only (`logits_to_keep`: the last
        # lc + 1 positions, lp - 1 .. lp + lc - 1; a 151k vocabulary at every prompt position is most of the cost)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=lc + 1).logits[:, :lc, :]
        lps = torch.log_softmax(logits.float(), dim=-1).gather(2, ids[:, lp:, None])[:, :, 0]
        out[part] = lps.sum(1).cpu()
    return out


def sequence_kl(base_seq_logprobs: torch.Tensor, seq_logprobs: torch.Tensor) -> float:
    """Monte Carlo forward KL over base-sampled completions: mean of log pi0(y|x) - log pi(y|x), in nats. Unbiased;
    a single estimate can fall below 0 when the policies are close."""
    if base_seq_logprobs.shape != seq_logprobs.shape:
        raise ValueError("sequence_kl: the two scores must cover the same samples")
    return float((base_seq_logprobs - seq_logprobs).mean())
