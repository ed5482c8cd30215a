"""Head effects e_h = m(clean input, a_h replaced by its corrupted-input value) - m(clean), per pair, by three
methods (registered in `dcv.circuits.methods`; shared/DESIGN.md, "Measures"):

- `exact`: the patched forward itself. Corrupted activations are cached once; `heads_per_forward` heads are
  patched in one forward by stacking the clean batch, one copy per head.
- `eap`: first order, (a_h(p~) - a_h(p)) . dm/da_h at the clean input: for all heads, a forward of the corrupted
  prompts and a forward and backward of the clean ones, which also gives the clean run.
- `eap-ig`: the same with the gradient averaged over `steps` inputs between the corrupted and the clean input
  embeddings, alpha = 1/steps ... 1 (Hanna et al. 2024); `eap` is `eap-ig` with one step at the clean end.

Important heads usually have negative effects (corrupting them lowers m).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dcv.circuits.faithfulness import head_order
from dcv.circuits.hooks import HeadSites, find_heads, head_hooks
from dcv.circuits.pairs import PairBatch
from dcv.circuits.patching import (PairRun, ProbedModel, capture, clean_layer_outputs, frozen, metric, model_device,
                                   one_hot_heads, patched_metric)


@dataclass
class HeadEffects:
    """Signed head effects per pair [pair, layer, head] (probe-row order), with m on clean and corrupted prompts."""

    method: str
    steps: int | None
    per_pair: torch.Tensor  # [pair, layer, head] float32
    m_clean: torch.Tensor  # [pair]
    m_corrupt: torch.Tensor  # [pair]

    @classmethod
    def build(cls, bound, p: ProbedModel, per_pair: torch.Tensor) -> "HeadEffects":
        """The result of a bound method (dcv.circuits.methods) whose function gave `per_pair` on the runs of `p`."""
        return cls(bound.name, bound.steps, per_pair, p.gather([r.m_clean for r in p.runs]),
                   p.gather([r.m_corrupt for r in p.runs]))

    @property
    def mean(self) -> torch.Tensor:
        """Signed effects, mean over pairs [layer, head]."""
        return self.per_pair.mean(0)

    @property
    def abs_mean(self) -> torch.Tensor:
        """Mean over pairs of |e_h| [layer, head]."""
        return self.per_pair.abs().mean(0)

    @property
    def scores(self) -> torch.Tensor:
        """What a head scores [layer, head]: its signed mean effect (rank by |score|)."""
        return self.mean

    @property
    def circuit(self) -> list[tuple[int, int]] | None:
        """None: effects choose no circuit of their own (the faithfulness curve's size k does)."""
        return None

    def order(self) -> list[tuple[int, int]]:
        """Heads (layer, head) by |mean e_h| descending; ties in (layer, head) order."""
        return head_order(self.mean)

    def record_fields(self, circuit_f: float | None = None) -> dict:
        """The circuits JSON keys this result fills (unrounded): signed mean, mean |e| and per-pair effects."""
        return {"effects": self.mean, "abs_effects": self.abs_mean, "effects_per_pair": self.per_pair}


def exact(p: ProbedModel, heads_per_forward: int) -> torch.Tensor:
    """Per-pair effects [pair, layer, head] by patched forwards, `heads_per_forward` heads stacked in one."""
    choice = one_hot_heads(p.shape)  # one intervention per head: its corrupted activation
    per_batch = []
    for run in p.runs:
        m = patched_metric(p.model, p.sites, run.batch, [run.corrupt_z], choice, heads_per_forward,
                           clean_layer_outputs(p.model, p.sites, run.batch))  # [L*H, batch]
        per_batch.append((m - run.m_clean[None]).T.reshape(len(run.batch), *p.shape))
    return p.gather(per_batch)


def sampled_heads(shape: tuple[int, int], n: int, seed: int = 0) -> list[tuple[int, int]]:
    """`n` heads (layer, head) drawn without replacement by a seeded permutation, in (layer, head) order; every head
    when n >= layer x head."""
    L, H = shape
    idx = sorted(torch.randperm(L * H, generator=torch.Generator().manual_seed(seed))[:n].tolist())
    return [(i // H, i % H) for i in idx]


def exact_heads(p: ProbedModel, heads: list[tuple[int, int]], heads_per_forward: int) -> torch.Tensor:
    """`exact` on the listed heads only: per-pair effects [pair, len(heads)] (one patched forward per head, so
    len(heads) / (layer x head) of exact's cost)."""
    L, H = p.shape
    choice = one_hot_heads(p.shape)[[l * H + h for l, h in heads]]
    per_batch = []
    for run in p.runs:
        m = patched_metric(p.model, p.sites, run.batch, [run.corrupt_z], choice, heads_per_forward,
                           clean_layer_outputs(p.model, p.sites, run.batch))  # [n, batch]
        per_batch.append((m - run.m_clean[None]).T)
    return p.gather(per_batch)


def _ig_pass(p_model, sites: HeadSites, b: PairBatch, alphas: torch.Tensor, chunk: int):
    """Forwards and backwards with grad at inputs e(p~) + alpha (e(p) - e(p~)), `chunk` alphas stacked per forward
    (`torch.lerp`, so alpha 1 is exactly the clean input).

    Returns dm/dz per layer [batch, pos, head, d_head] averaged over `alphas`, and, when alpha 1 is among them, the
    clean run it contains: (head activations per layer, m), else None.
    """
    embed = p_model.get_input_embeddings()
    with torch.no_grad():
        e_clean, e_corrupt = embed(b.clean), embed(b.corrupt)  # [batch, pos, d_model]
    total: list[torch.Tensor] | None = None
    clean = None
    B = len(b)
    for s in range(0, len(alphas), chunk):
        a = alphas[s : s + chunk]
        A = len(a)
        w = a.to(e_clean.device, e_clean.dtype)[:, None, None, None]
        x = torch.lerp(e_corrupt[None], e_clean[None], w).reshape(A * B, *e_clean.shape[1:])
        x.requires_grad_(True)
        zs: list[torch.Tensor] = [None] * sites.n_layers  # type: ignore[list-item]

        def keep(layer: int, z: torch.Tensor) -> torch.Tensor:
            zs[layer] = z
            return z  # the tensor o_proj consumes, so the gradient is taken at it

        with torch.enable_grad(), frozen(p_model), head_hooks(sites, keep):
            m = metric(p_model, None, b.mask.repeat(A, 1), b.last.repeat(A), b.answer.repeat(A),
                       b.distractor.repeat(A), embeds=x, sites=sites)
            grads = torch.autograd.grad(m.sum(), zs)
        if 1.0 in a.tolist():
            i = a.tolist().index(1.0)
            clean = ([z.detach().view(A, B, *z.shape[1:])[i].clone() for z in zs], m.detach().view(A, B)[i].clone())
        g = [gr.float().view(A, B, *gr.shape[1:]).sum(0) for gr in grads]
        total = g if total is None else [t + x_ for t, x_ in zip(total, g)]
    return [t / len(alphas) for t in total], clean


def _scores(run: PairRun, grads: list[torch.Tensor]) -> torch.Tensor:
    """(a_h(p~) - a_h(p)) . g_h summed over real positions and d_head: [batch, layer, head]."""
    mask = run.batch.mask[:, :, None, None].float()
    return torch.stack([((xz.float() - cz.float()) * g * mask).sum((1, 3))
                        for xz, cz, g in zip(run.corrupt_z, run.clean_z, grads)], 1)


def _alphas(steps: int) -> torch.Tensor:
    return (torch.arange(1, steps + 1, dtype=torch.float64) / steps).float()  # 1/steps ... 1, exactly 1 at the end


def _attribution(p: ProbedModel, steps: int, chunk: int) -> torch.Tensor:
    """Given the cached runs: gradients only (one forward and backward per `chunk` alphas)."""
    per_batch = []
    for run in p.runs:
        grads, _ = _ig_pass(p.model, p.sites, run.batch, _alphas(steps), chunk)
        per_batch.append(_scores(run, grads))
    return p.gather(per_batch)


def attribution_from_scratch(model, batches: list[PairBatch], steps: int, chunk: int) -> tuple[ProbedModel, torch.Tensor]:
    """`eap` (steps 1) or `eap-ig` without cached runs: the clean run is alpha 1 of the gradient pass, so only the
    corrupted prompts get a forward of their own (no grad; stacking them into the gradient pass was slower, since
    the backward then runs over them too). Returns the runs (as `probe_model` would, up to float rounding) and the
    per-pair effects."""
    sites, dev = find_heads(model), model_device(model)
    runs, per_batch = [], []
    for b in batches:
        b = b.to(dev)
        xz, mx = capture(model, sites, b, b.corrupt)
        grads, (cz, mc) = _ig_pass(model, sites, b, _alphas(steps), chunk)
        run = PairRun(b, cz, xz, mc.float(), mx)
        runs.append(run)
        per_batch.append(_scores(run, grads))
    p = ProbedModel(model, sites, runs, sum(len(b) for b in batches))
    return p, p.gather(per_batch)


def eap(p: ProbedModel) -> torch.Tensor:
    """Per-pair effects [pair, layer, head] by one gradient at the clean input (given the cached runs)."""
    return _attribution(p, 1, 1)


def eap_ig(p: ProbedModel, steps: int, chunk: int) -> torch.Tensor:
    """Per-pair effects [pair, layer, head] by `steps` gradients, `chunk` of them stacked per forward."""
    return _attribution(p, steps, max(1, chunk))
