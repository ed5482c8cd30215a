"""Differentiable Binary Masking over attention heads (DBM: Chaudhary & Geiger 2024, as used by arXiv 2605.28860).

One learnt logit per head; its mask m_h = sigmoid(logit_h / T) mixes, at the input of `o_proj` and at every
position, the head's own activation in the clean forward with its activation on the corrupted prompt:

    z_h <- m_h * z_h + (1 - m_h) * z_h(p~)

Convention: m_h = 1 keeps the head (its clean value), m_h = 0 replaces it by the corrupted one, so m_h reads as the
head's importance (high = the clean behaviour needs it). pyvene's `SigmoidMaskIntervention` (RAVEL's DBM) writes
the complement: there the mask selects what is swapped in from the source.

Loss, minimised over the logits only (model parameters frozen):

    mean over pairs of -log p(answer | masked clean prompt)  +  lambda * sum_h m_h

i.e. the study's -log p(target) at each pair's answer position (not the logit difference m of the other methods),
plus a sparsity term: a head whose clean value lowers the mean NLL by less than `lambda` is dropped (m_h -> 0).
T anneals geometrically from `t_start` to `t_end` over the steps, so the masks end near 0 or 1; the binary circuit
is {h : m_h > 0.5}. Full-batch Adam: each step one forward and backward per probe batch, in the batches' order; every
logit starts at `init` (> 0: all heads kept, the full model). No random draw anywhere, so the same model, pairs and
knobs give the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dcv.circuits.hooks import head_hooks, logits_at
from dcv.circuits.patching import PairRun, ProbedModel, frozen, model_device


@dataclass
class MaskFit:
    """What the optimisation gives: final logits [layer, head] and per-step diagnostics."""

    logits: torch.Tensor  # [layer, head] float32, CPU
    t_end: float
    nll: list[float]  # per step: mean -log p(answer) under the soft masks of that step (before its update)
    mask_sum: list[float]  # per step: sum_h m_h
    nll_circuit: float  # mean -log p(answer) with the binary circuit (m > 0.5 kept, every other head corrupted)


def _temperatures(steps: int, t_start: float, t_end: float) -> list[float]:
    """Geometric from t_start (step 0) to t_end (the last step)."""
    return [t_start * (t_end / t_start) ** (i / max(steps - 1, 1)) for i in range(steps)]


def answer_nll(p: ProbedModel, run: PairRun, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the batch's pairs of -log p(answer) with each head mixed by `mask` [layer, head] (float32)."""
    b = run.batch

    def mix(layer: int, z: torch.Tensor) -> torch.Tensor:  # z [batch, pos, head, d_head], the live clean value
        w = mask[layer][None, None, :, None]
        return (w * z.float() + (1 - w) * run.corrupt_z[layer].float()).to(z.dtype)

    with head_hooks(p.sites, mix), logits_at(p.model, b.last, p.sites):
        out = p.model(input_ids=b.clean, attention_mask=b.mask, use_cache=False)
    logp = torch.log_softmax(out.logits[:, 0].float(), -1)  # [batch, vocab]
    return -logp.gather(1, b.answer[:, None]).sum()


def fit_masks(p: ProbedModel, steps: int, lr: float, sparsity: float, t_start: float, t_end: float,
              init: float) -> MaskFit:
    """Learn one mask logit per head on the cached runs of `p` (see the module docstring)."""
    dev = model_device(p.model)
    logits = torch.full(p.shape, float(init), dtype=torch.float32, device=dev, requires_grad=True)  # [layer, head]
    opt = torch.optim.Adam([logits], lr=lr)
    nll_curve, sum_curve = [], []
    with torch.enable_grad(), frozen(p.model):
        for t in _temperatures(steps, t_start, t_end):
            opt.zero_grad(set_to_none=True)
            nll = 0.0
            for run in p.runs:  # gradients summed over the batches: one full-batch step
                loss = answer_nll(p, run, torch.sigmoid(logits / t)) / p.n_pairs
                loss.backward()
                nll += float(loss.detach())
            m = torch.sigmoid(logits / t)
            (sparsity * m.sum()).backward()
            nll_curve.append(nll)
            sum_curve.append(float(m.detach().sum()))
            opt.step()
    final = logits.detach()
    with torch.no_grad():
        hard = (torch.sigmoid(final / t_end) > 0.5).float()
        nll_circuit = sum(float(answer_nll(p, run, hard)) for run in p.runs) / p.n_pairs
    return MaskFit(final.float().cpu(), t_end, nll_curve, sum_curve, nll_circuit)


def dbm(p: ProbedModel, steps: int, lr: float, sparsity: float, t_start: float, t_end: float, init: float) -> MaskFit:
    """The registered function of method `dbm` (dcv.circuits.methods)."""
    return fit_masks(p, steps, lr, sparsity, t_start, t_end, init)


@dataclass
class HeadMask:
    """A learnt head mask: final mask values m_h in [0, 1] [layer, head] (importance; the method's scores), the
    logits behind them, the binary circuit m_h > 0.5, and m on the clean and corrupted prompts [pair]."""

    method: str
    steps: int | None
    values: torch.Tensor  # [layer, head] float32: sigmoid(logit / t_end)
    logits: torch.Tensor  # [layer, head] float32
    fit: MaskFit
    m_clean: torch.Tensor  # [pair]
    m_corrupt: torch.Tensor  # [pair]
    knobs: dict = field(default_factory=dict)

    @classmethod
    def build(cls, bound, p: ProbedModel, fit: MaskFit) -> "HeadMask":
        values = torch.sigmoid(fit.logits / fit.t_end)
        return cls(bound.name, bound.steps, values, fit.logits, fit, p.gather([r.m_clean for r in p.runs]),
                   p.gather([r.m_corrupt for r in p.runs]), dict(bound.knobs))

    @property
    def scores(self) -> torch.Tensor:
        """The final mask values [layer, head] (high = needed)."""
        return self.values

    @property
    def circuit(self) -> list[tuple[int, int]]:
        """The binary circuit: heads with m_h > 0.5, in (layer, head) order."""
        return [(int(l), int(h)) for l, h in torch.nonzero(self.values > 0.5).tolist()]

    def order(self) -> list[tuple[int, int]]:
        """Heads by logit descending (the order of m_h at any temperature; the final masks, near 0 or 1, would tie),
        ties in (layer, head) order. Its top-|circuit| heads are the binary circuit."""
        H = self.logits.shape[1]
        idx = torch.sort(-self.logits.flatten().double(), stable=True).indices.tolist()
        return [(i // H, i % H) for i in idx]

    def record_fields(self, circuit_f: float | None = None) -> dict:
        """The circuits JSON keys this result fills (unrounded): no effects (`effects`, `abs_effects`,
        `effects_per_pair` are null) and a `mask` block; `circuit_f` is F of the binary circuit."""
        return {"effects": None, "abs_effects": None, "effects_per_pair": None, "mask": {
            "values": self.values, "logits": self.logits, "circuit": [list(h) for h in self.circuit],
            "size": len(self.circuit), "f": circuit_f, "nll_circuit": self.fit.nll_circuit, "knobs": self.knobs,
            "curve": {"nll": self.fit.nll, "mask_sum": self.fit.mask_sum}}}
