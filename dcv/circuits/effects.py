"""Head effects e_h = m(clean input, a_h replaced by its corrupted-input value) - m(clean), per pair, by three
interchangeable methods with one signature (shared/DESIGN.md, "Measures"):

- `exact`: the patched forward itself. Corrupted activations are cached once; `heads_per_forward` heads are
  patched in one forward by stacking the clean batch, one copy per head.
- `eap`: first order, (a_h(p~) - a_h(p)) . dm/da_h at the clean input: two forwards and one backward for all heads.
- `eap-ig`: the same with the gradient averaged over `steps` inputs between the corrupted and the clean input
  embeddings, alpha = 1/steps ... 1 (Hanna et al. 2024); `eap` is `eap-ig` with one step at the clean end.

Important heads usually have negative effects (corrupting them lowers m).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dcv.circuits.hooks import head_hooks
from dcv.circuits.pairs import PairBatch
from dcv.circuits.patching import ProbedModel, metric, one_hot_heads, patched_metric, probe_model

METHODS = ("exact", "eap", "eap-ig")


@dataclass
class HeadEffects:
    """Signed head effects per pair [pair, layer, head] (probe-row order), with m on clean and corrupted prompts."""

    method: str
    steps: int | None
    per_pair: torch.Tensor  # [pair, layer, head] float32
    m_clean: torch.Tensor  # [pair]
    m_corrupt: torch.Tensor  # [pair]

    @property
    def mean(self) -> torch.Tensor:
        """Signed effects, mean over pairs [layer, head]."""
        return self.per_pair.mean(0)

    @property
    def abs_mean(self) -> torch.Tensor:
        """Mean over pairs of |e_h| [layer, head]."""
        return self.per_pair.abs().mean(0)


def exact(p: ProbedModel, steps: int, heads_per_forward: int) -> torch.Tensor:
    choice = one_hot_heads(p.shape)  # one intervention per head: its corrupted activation
    per_batch = []
    for run in p.runs:
        m = patched_metric(p.model, p.sites, run.batch, [run.corrupt_z], choice, heads_per_forward)  # [L*H, batch]
        per_batch.append((m - run.m_clean[None]).T.reshape(len(run.batch), *p.shape))
    return p.gather(per_batch)


def _mean_gradient(p: ProbedModel, b: PairBatch, alphas: torch.Tensor, chunk: int) -> list[torch.Tensor]:
    """dm/dz per layer [batch, pos, head, d_head], averaged over inputs e(p~) + alpha (e(p) - e(p~))."""
    embed = p.model.get_input_embeddings()
    with torch.no_grad():
        e_clean, e_corrupt = embed(b.clean), embed(b.corrupt)  # [batch, pos, d_model]
    total: list[torch.Tensor] | None = None
    B = len(b)
    for s in range(0, len(alphas), chunk):
        a = alphas[s : s + chunk].to(e_clean.device, e_clean.dtype)
        A = len(a)
        x = (e_corrupt[None] + a[:, None, None, None] * (e_clean - e_corrupt)[None]).reshape(A * B, *e_clean.shape[1:])
        x.requires_grad_(True)
        zs: list[torch.Tensor] = [None] * p.sites.n_layers  # type: ignore[list-item]

        def keep(layer: int, z: torch.Tensor) -> torch.Tensor:
            zs[layer] = z
            return z  # the tensor o_proj consumes, so the gradient is taken at it

        with torch.enable_grad(), head_hooks(p.sites, keep):
            m = metric(p.model, None, b.mask.repeat(A, 1), b.last.repeat(A), b.answer.repeat(A),
                       b.distractor.repeat(A), embeds=x)
            grads = torch.autograd.grad(m.sum(), zs)
        g = [gr.float().view(A, B, *gr.shape[1:]).sum(0) for gr in grads]
        total = g if total is None else [t + x_ for t, x_ in zip(total, g)]
    return [t / len(alphas) for t in total]


def _attribution(p: ProbedModel, steps: int, chunk: int) -> torch.Tensor:
    alphas = torch.arange(1, steps + 1, dtype=torch.float32) / steps
    per_batch = []
    for run in p.runs:
        grads = _mean_gradient(p, run.batch, alphas, chunk)
        mask = run.batch.mask[:, :, None, None].float()
        e = [((xz.float() - cz.float()) * g * mask).sum((1, 3))  # [batch, head]
             for xz, cz, g in zip(run.corrupt_z, run.clean_z, grads)]
        per_batch.append(torch.stack(e, 1))  # [batch, layer, head]
    return p.gather(per_batch)


def eap(p: ProbedModel, steps: int, heads_per_forward: int) -> torch.Tensor:
    return _attribution(p, 1, 1)


def eap_ig(p: ProbedModel, steps: int, heads_per_forward: int) -> torch.Tensor:
    return _attribution(p, steps, max(1, heads_per_forward))


REGISTRY: dict[str, Callable[[ProbedModel, int, int], torch.Tensor]] = {"exact": exact, "eap": eap, "eap-ig": eap_ig}


def head_effects(model, batches: list[PairBatch], method: str = "exact", steps: int = 5, heads_per_forward: int = 32,
                 probed: ProbedModel | None = None) -> HeadEffects:
    """Head effects of every head of `model` on the probe pairs of `batches` by `method` (one of METHODS).

    `probed` reuses the clean and corrupted runs of an earlier call on the same model and batches.
    """
    if method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    if steps < 1 or heads_per_forward < 1:
        raise ValueError("steps and heads_per_forward must be >= 1")
    p = probed or probe_model(model, batches)
    per_pair = REGISTRY[method](p, steps, heads_per_forward)
    m_clean = p.gather([r.m_clean for r in p.runs])
    m_corrupt = p.gather([r.m_corrupt for r in p.runs])
    return HeadEffects(method, steps if method == "eap-ig" else None, per_pair, m_clean, m_corrupt)
