"""Circuits and their faithfulness (shared/DESIGN.md, "Measures").

Circuit C(M, c, k): the k heads of largest |mean e_h|. Faithfulness F(C | M) = (m(C) - m(empty)) / (m(M) - m(empty)),
each m a mean over pairs, where m(C) keeps the heads of C and mean-ablates every other head, and m(empty) ablates
them all. The curve F(C_k) over circuit sizes k and its area over k / K in [0, 1] (`cpr`, as MIB's CPR) describe the
whole ranking; choosing one k from it (the smallest with F >= a target) is left to the reader (`smallest_k`).

Mean ablation: a head's activation is replaced by its mean over the clean prompts of the probe set, per position.
Positions are aligned at the answer (the last real token: offset 0, 1, ... back from it), since prompts of one
capability may differ in length and the answer position is what the metric reads; the first position (BOS or the
first prompt token, the attention sink) has its own mean. A position that only some prompts have is averaged over
those that have it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dcv.circuits.pairs import PairBatch
from dcv.circuits.patching import ProbedModel, patched_metric


def position_slots(b: PairBatch) -> torch.Tensor:
    """[batch, pos]: 0 for the first position, 1 + (last - t) for 0 < t <= last, 0 on padding (never read)."""
    t = torch.arange(b.mask.shape[1], device=b.mask.device)[None]
    slot = 1 + b.last[:, None] - t
    return torch.where((t == 0) | (t > b.last[:, None]), torch.zeros_like(slot), slot)


def head_means(p: ProbedModel) -> list[torch.Tensor]:
    """Mean clean activation per layer [slot, head, d_head] (float32), slots as in `position_slots`."""
    n_slots = 1 + max(int(r.batch.last.max()) for r in p.runs) + 1
    sums = [torch.zeros(n_slots, *z.shape[2:], dtype=torch.float32, device=z.device) for z in p.runs[0].clean_z]
    count = torch.zeros(n_slots, dtype=torch.float32, device=sums[0].device)
    for r in p.runs:
        slot = position_slots(r.batch).flatten()
        real = r.batch.mask.flatten().float()
        count.index_add_(0, slot, real)
        for l, z in enumerate(r.clean_z):
            zf = z.float().flatten(0, 1) * real[:, None, None]  # [batch * pos, head, d_head]
            sums[l].index_add_(0, slot, zf)
    return [s / count.clamp(min=1)[:, None, None] for s in sums]


def mean_source(means: list[torch.Tensor], b: PairBatch, dtype: torch.dtype) -> list[torch.Tensor]:
    """The mean-ablation values of a batch, per layer [batch, pos, head, d_head]."""
    slot = position_slots(b)
    return [m[slot].to(dtype) for m in means]


def circuit_sizes(n_heads: int, sizes: str | int = "all") -> list[int]:
    """Circuit sizes at which F is measured: every k in 0..n_heads, or `sizes` evenly spaced ones (0 and all
    heads included) for large models."""
    if sizes == "all" or (isinstance(sizes, int) and sizes >= n_heads + 1):
        return list(range(n_heads + 1))
    if not isinstance(sizes, int) or sizes < 2:
        raise ValueError(f"sizes must be 'all' or an integer >= 2, got {sizes!r}")
    return sorted({int(round(x)) for x in np.linspace(0, n_heads, sizes)})


def choosable_sizes(k: list[int], f: list[float | None]) -> list[int]:
    """The sizes of a curve (k, f) that the rule "the smallest k >= 1 with F >= target, else the largest k" can pick,
    whatever the target: each k >= 1 whose F exceeds F at every smaller k >= 1, and the largest k; with 0 (the empty
    circuit every curve needs). Measuring another model's curve of the same ranking at these sizes only gives F at
    whichever base circuit that rule chooses on this curve."""
    out, best = {0, max(k)}, -np.inf
    for kk, ff in sorted(zip(k, f)):
        if kk >= 1 and ff is not None and np.isfinite(ff) and ff > best:
            out.add(kk)
            best = ff
    return sorted(out)


def head_order(effects: torch.Tensor | np.ndarray) -> list[tuple[int, int]]:
    """Heads (layer, head) by |effect| descending; ties in (layer, head) order."""
    e = np.abs(np.asarray(effects, dtype=np.float64))
    H = e.shape[1]
    return [(int(i) // H, int(i) % H) for i in np.argsort(-e.flatten(), kind="stable")]


def circuit_choice(order: list[tuple[int, int]], sizes: list[int], shape: tuple[int, int]) -> torch.Tensor:
    """[size, layer, head]: 1 (mean-ablate) for every head outside the top-k of `order`, 0 inside."""
    c = torch.ones(len(sizes), *shape, dtype=torch.long)
    for i, k in enumerate(sizes):
        for l, h in order[:k]:
            c[i, l, h] = 0
    return c


def area(k: list[int], f: list[float], n_heads: int) -> float:
    """Area under f over k / n_heads (trapezoids on the measured sizes)."""
    x = np.asarray(k, dtype=np.float64) / max(n_heads, 1)
    y = np.asarray(f, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def smallest_k(k: list[int], f: list[float | None], target: float) -> int | None:
    """The smallest measured circuit size whose faithfulness reaches `target` (None if none does)."""
    for kk, ff in zip(k, f):
        if ff is not None and np.isfinite(ff) and ff >= target:
            return kk
    return None


@dataclass
class Curve:
    k: list[int]
    f: list[float]  # nan where m(M) = m(empty)
    m: list[float]  # mean m(C_k)
    m_full: float
    m_empty: float
    order: list[tuple[int, int]]

    @property
    def cpr(self) -> float:
        return area(self.k, self.f, len(self.order))


def faithfulness_curve(p: ProbedModel, order: list[tuple[int, int]], sizes: list[int], heads_per_forward: int,
                       means: list[torch.Tensor] | None = None) -> Curve:
    """F(C_k | model) for the top-k heads of `order` at every size in `sizes` (which must include 0)."""
    if 0 not in sizes:
        raise ValueError("sizes must include 0 (the empty circuit)")
    means = means if means is not None else head_means(p)
    choice = circuit_choice(order, sizes, p.shape)
    dtype = p.runs[0].clean_z[0].dtype
    per_batch = [patched_metric(p.model, p.sites, r.batch, [mean_source(means, r.batch, dtype)], choice,
                                heads_per_forward).T for r in p.runs]  # [batch, size]
    m = p.gather(per_batch).double().mean(0)  # [size]
    m_full = float(p.gather([r.m_clean for r in p.runs]).double().mean())
    m_empty = float(m[sizes.index(0)])
    den = m_full - m_empty
    f = [(float(x) - m_empty) / den if abs(den) > 1e-9 else float("nan") for x in m]
    return Curve(list(sizes), f, [float(x) for x in m], m_full, m_empty, order)
