"""The measures of docs/design.md for one fine-tuned model Mx against the base M0 on one capability.

Notation: e0 = e_h(M0, c), ex = e_h(Mx, c) (signed mean effects over the probe pairs), C0 = the base circuit.

- head vulnerability v_h = 1 - ex / e0 for h in C0 (0: the head does its base job; 1: it no longer contributes);
- circuit vulnerability CV = sum_{h in C0} w_h v_h with w_h = |e0_h| / sum_{g in C0} |e0_g|. The weights are
  normalised over C0 (DESIGN's "sum |e(M0, c)|" read as the sum over C0), so CV(M0) = 0 and a circuit whose heads
  all stopped contributing has CV = 1. Written out, CV = sum_{C0} (|e0| - sign(e0) ex) / sum_{C0} |e0|, which stays
  finite when one head's e0 is small;
- preserved fraction P = |C0 ∩ top-|C0| heads of Mx by |ex|| / |C0|, and its finer companion, the Spearman rank
  correlation of all heads' |e_h| in Mx with those in M0;
- faithfulness retained = F(C0 | Mx) / F(C0 | M0), both read from `base_circuit` at k = |C0|;
- cross-model head effect x_h (Mx's a_h put into M0 on clean input), reported beside v_h as x_h / e0 (0: Mx's head
  output does the base head's job; 1: it is as uninformative as the corrupted input) and weighted as CV is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcv.circuits.rank import spearman, top_k
from dcv.errors import DcvError
from dcv.scoring.circuits import Circuit


@dataclass(frozen=True)
class BaseCircuit:
    """C0(c): the smallest base top-k (base ranking by |e_h|) whose faithfulness reaches the target."""

    capability: str
    heads: tuple[tuple[int, int], ...]
    faithfulness: float
    target: float
    reached: bool  # False when no listed k reaches the target (then C0 is the largest listed k)

    @property
    def k(self) -> int:
        return len(self.heads)

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        m = np.zeros(shape, dtype=bool)
        for l, h in self.heads:
            m[l, h] = True
        return m


def base_circuit(base: Circuit, target: float) -> BaseCircuit:
    """C0 from the base's `base_circuit` curve: the smallest k >= 1 with F(C0_k | M0) >= target."""
    ks = [(k, f) for k, f in zip(base.base_k, base.base_f) if k >= 1]
    if not ks:
        raise DcvError(f"{base.path}: base_circuit.k: no circuit size >= 1")
    hit = [(k, f) for k, f in sorted(ks) if f >= target]
    k, f = hit[0] if hit else max(ks)
    if k > len(base.base_order):
        raise DcvError(f"{base.path}: base_circuit.order: {len(base.base_order)} heads, fewer than k = {k}")
    return BaseCircuit(base.capability, tuple(base.base_order[:k]), f, target, bool(hit))


def circuit_vulnerability(e0: np.ndarray, ex: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """CV over the heads in `mask`; e0, ex: [..., layer, head] (leading axes broadcast, e.g. bootstrap draws)."""
    a0 = np.abs(e0)
    num = np.where(mask, a0 - np.sign(e0) * ex, 0.0).sum(axis=(-2, -1))
    return num / np.where(mask, a0, 0.0).sum(axis=(-2, -1))


def head_vulnerability(e0: np.ndarray, ex: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """v_h = 1 - ex / e0 on the heads in `mask`, NaN elsewhere."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mask, 1.0 - ex / e0, np.nan)


def top_heads(abs_effects: np.ndarray, k: int) -> set[tuple[int, int]]:
    """The k heads of largest |e_h| as (layer, head) (ties: the lower layer, then the lower head, first)."""
    return {divmod(i, abs_effects.shape[1]) for i in top_k(abs_effects, k)}


def preserved_fraction(c0: BaseCircuit, x: Circuit) -> float:
    """|C0 & C(Mx, |C0|)| / |C0|, both circuits ranked alike: by |mean e_h| (docs/design.md)."""
    return len(set(c0.heads) & top_heads(np.abs(x.effects), c0.k)) / c0.k


def faithfulness_retained(c0: BaseCircuit, base: Circuit, x: Circuit) -> float:
    if c0.k not in x.base_k:
        raise DcvError(f"{x.path}: base_circuit.k: no entry for k = {c0.k} (the base circuit's size)")
    f0 = base.base_f_at(c0.k)
    return x.base_f_at(c0.k) / f0 if f0 != 0 else float("nan")


@dataclass
class ModelScore:
    """Every measure of one fine-tuned model on one capability; maps are [layer, head], NaN outside C0."""

    cv: float
    v: np.ndarray
    preserved: float
    rank_correlation: float
    faithfulness_retained: float
    cross_model: np.ndarray | None  # x_h / e0 on C0
    cross_model_cv: float | None


def score_model(base: Circuit, c0: BaseCircuit, x: Circuit) -> ModelScore:
    mask = c0.mask(base.shape)
    e0, ex = base.effects, x.effects
    cross = cross_cv = None
    if x.cross_effects is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = np.where(mask, x.cross_effects / e0, np.nan)
        cross_cv = float(np.where(mask, np.sign(e0) * x.cross_effects, 0.0).sum() / np.abs(e0[mask]).sum())
    return ModelScore(cv=float(circuit_vulnerability(e0, ex, mask)), v=head_vulnerability(e0, ex, mask),
                      preserved=preserved_fraction(c0, x), rank_correlation=spearman(base.abs_effects, x.abs_effects),
                      faithfulness_retained=faithfulness_retained(c0, base, x), cross_model=cross,
                      cross_model_cv=cross_cv)
