"""The measures of docs/design.md for one fine-tuned model Mx against the base M0 on one capability.

Notation: e0 = e_h(M0, c), ex = e_h(Mx, c) (signed mean effects over the scoring split's probe pairs), C0 = the base
circuit, chosen on the discovery split (`dcv.splits`): the smallest k whose top-k heads of the base's discovery
ranking reach the faithfulness target there.

- head vulnerability v_h = 1 - ex / e0 for h in C0 (0: the head does its base job; 1: it no longer contributes),
  left undefined (NaN) on *unstable* heads: |e0_h| below `min_relative` of C0's mean |e0|, or within `se_multiple`
  standard errors of 0 on the scoring pairs, or of the other sign than on the discovery split;
- circuit vulnerability CV = sum_{h in C0} w_h v_h with w_h = |e0_h| / sum_{g in C0} |e0_g|, written as
  CV = sum_{C0} (|e0| - sign(e0) ex) / sum_{C0} |e0| (finite on every head: a small e0 has a small weight);
- preserved fraction P = |C0 ∩ top-|C0| heads of Mx by |ex|| / |C0| (its chance level, for |C0| heads drawn at
  random among K, is |C0| / K), and the Spearman rank correlation of all heads' |mean e_h| in Mx with M0's (ranked
  as C0 and P are: by |mean e|);
- faithfulness retained = F(C0 | Mx) / F(C0 | M0) on the scoring split, undefined when Mx has lost the signal
  faithfulness divides by (|m(Mx) - m_empty(Mx)| < `min_signal` |m(M0) - m_empty(M0)|) or when C0 is not faithful
  on the scoring split (F(C0 | M0) < `min_signal`);
- cross-model head effect x_h (Mx's a_h put into M0 on clean input), reported as x_h / e0 on stable heads (0: Mx's
  head output does the base head's job; 1: it is as uninformative as the corrupted input), weighted as CV is;
- the clean logit-difference drop 1 - m(Mx) / m(M0) on the same pairs (a predictor baseline: CV is close to it),
  undefined when the base does not prefer the answer (m(M0) <= 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dcv.circuits.rank import spearman, top_k
from dcv.errors import DcvError
from dcv.scoring.circuits import Circuit


@dataclass(frozen=True)
class BaseCircuit:
    """C0(c): the smallest top-k of the base's ranking on the selection split whose faithfulness there reaches the
    target, with the guards' verdict on each head (from the scoring split)."""

    capability: str
    heads: tuple[tuple[int, int], ...]
    faithfulness: float  # F(C0 | M0) on the selection split (where k was chosen)
    target: float
    reached: bool  # False when no listed k reaches the target (then C0 is the largest listed k)
    n_heads: int = 0  # K, every head of the model
    selection_split: str | None = None
    faithfulness_scoring: float | None = None  # F(C0 | M0) on the scoring split (held out from the selection)
    unstable: dict = field(default_factory=dict)  # (layer, head) -> reasons ["small", "noisy", "sign"]

    @property
    def k(self) -> int:
        return len(self.heads)

    @property
    def chance_preserved(self) -> float:
        """E[P] when Mx's top-|C0| were |C0| heads drawn at random: |C0| / K."""
        return self.k / self.n_heads if self.n_heads else float("nan")

    @property
    def majority(self) -> bool:
        """C0 holds more than half the heads: P says little (its chance level is above 0.5)."""
        return self.k > self.n_heads / 2

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        m = np.zeros(shape, dtype=bool)
        for l, h in self.heads:
            m[l, h] = True
        return m

    def stable_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """C0's heads that the guards keep for per-head ratios."""
        m = self.mask(shape)
        for l, h in self.unstable:
            m[l, h] = False
        return m


def unstable_heads(heads, scoring: Circuit, selection: Circuit | None, min_relative: float, se_multiple: float
                   ) -> dict:
    """The heads of C0 whose base effect on the scoring pairs is too small to divide by: below `min_relative` of
    C0's mean |e0| ("small"), within `se_multiple` standard errors of 0 ("noisy"), or of the other sign than on the
    selection split ("sign")."""
    e0 = scoring.effects
    n = scoring.n_pairs
    se = scoring.effects_per_pair.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(e0)
    scale = float(np.mean([abs(e0[l, h]) for l, h in heads])) if heads else 0.0
    out = {}
    for l, h in heads:
        why = []
        if abs(e0[l, h]) < min_relative * scale:
            why.append("small")
        if abs(e0[l, h]) <= se_multiple * se[l, h]:
            why.append("noisy")
        if selection is not None and selection is not scoring and np.sign(selection.effects[l, h]) != np.sign(e0[l, h]):
            why.append("sign")
        if why:
            out[(l, h)] = why
    return out


def base_circuit(selection: Circuit, target: float, scoring: Circuit | None = None, min_relative: float = 0.1,
                 se_multiple: float = 2.0) -> BaseCircuit:
    """C0 from the selection file's curve (the base on the discovery split): the smallest k >= 1 with
    F(C0_k | M0) >= target. `scoring`: the base on the scoring split (default: the selection file itself), where the
    guards judge each head and F(C0 | M0) is read again on held-out pairs."""
    scoring = selection if scoring is None else scoring
    ks = [(k, f) for k, f in zip(selection.base_k, selection.base_f) if k >= 1]
    if not ks:
        raise DcvError(f"{selection.path}: base_circuit.k: no circuit size >= 1")
    hit = [(k, f) for k, f in sorted(ks) if f >= target]
    k, f = hit[0] if hit else max(ks)
    if k > len(selection.base_order):
        raise DcvError(f"{selection.path}: base_circuit.order: {len(selection.base_order)} heads, fewer than k = {k}")
    heads = tuple(selection.base_order[:k])
    return BaseCircuit(selection.capability, heads, f, target, bool(hit), n_heads=int(np.prod(selection.shape)),
                       selection_split=selection.split, faithfulness_scoring=scoring.circuit_f(heads, k),
                       unstable=unstable_heads(heads, scoring, selection, min_relative, se_multiple))


def circuit_vulnerability(e0: np.ndarray, ex: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """CV over the heads in `mask`; e0, ex: [..., layer, head] (leading axes broadcast, e.g. bootstrap draws)."""
    a0 = np.abs(e0)
    num = np.where(mask, a0 - np.sign(e0) * ex, 0.0).sum(axis=(-2, -1))
    return num / np.where(mask, a0, 0.0).sum(axis=(-2, -1))


def head_vulnerability(e0: np.ndarray, ex: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """v_h = 1 - ex / e0 on the heads in `mask` (the stable heads of C0), NaN elsewhere."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mask, 1.0 - ex / e0, np.nan)


def top_heads(abs_effects: np.ndarray, k: int) -> set[tuple[int, int]]:
    """The k heads of largest |e_h| as (layer, head) (ties: the lower layer, then the lower head, first)."""
    return {divmod(i, abs_effects.shape[1]) for i in top_k(abs_effects, k)}


def preserved_fraction(c0: BaseCircuit, x: Circuit) -> float:
    """|C0 & C(Mx, |C0|)| / |C0|, both circuits ranked alike: by |mean e_h| (docs/design.md)."""
    return len(set(c0.heads) & top_heads(np.abs(x.effects), c0.k)) / c0.k


def faithfulness_retained(c0: BaseCircuit, base: Circuit, x: Circuit, min_signal: float = 0.1) -> float:
    """F(C0 | Mx) / F(C0 | M0) on the scoring pairs; NaN when Mx's m(M) - m(empty) is below `min_signal` of the
    base's (F of Mx divides by it) or F(C0 | M0) < `min_signal` (C0 is not faithful on these pairs)."""
    fx, f0 = x.circuit_f(c0.heads, c0.k), base.circuit_f(c0.heads, c0.k)
    for c, f in ((x, fx), (base, f0)):
        if f is None:
            raise DcvError(f"{c.path}: no faithfulness curve of the base circuit's ranking at k = {c0.k} "
                           f"(discovery_circuit or base_circuit)")
    s0, sx = base.signal, x.signal
    if s0 is not None and sx is not None and (s0 == 0 or abs(sx) < min_signal * abs(s0)):
        return float("nan")
    if not np.isfinite(f0) or abs(f0) < min_signal:
        return float("nan")
    return fx / f0


def logit_diff_drop(base: Circuit, x: Circuit) -> float:
    """1 - m(Mx) / m(M0), the relative drop of the mean clean logit difference on the scoring pairs."""
    m0, mx = base.metric_clean, x.metric_clean
    if m0 is None or mx is None or not m0 > 0:
        return float("nan")
    return 1.0 - mx / m0


@dataclass
class ModelScore:
    """Every measure of one fine-tuned model on one capability; maps are [layer, head], NaN outside C0's stable
    heads."""

    cv: float
    v: np.ndarray
    preserved: float
    rank_correlation: float
    faithfulness_retained: float
    cross_model: np.ndarray | None  # x_h / e0 on C0's stable heads
    cross_model_cv: float | None
    logit_diff_drop: float = float("nan")


def score_model(base: Circuit, c0: BaseCircuit, x: Circuit, min_signal: float = 0.1) -> ModelScore:
    """Every measure of `x` against `base` (both on the scoring split). The base against itself has CV 0, v 0 and
    cross-model 0 (its heads in itself do the base's job)."""
    mask = c0.mask(base.shape)
    stable = c0.stable_mask(base.shape)
    e0, ex = base.effects, x.effects
    cross = cross_cv = None
    xe = x.cross_effects
    if xe is None and x.model == base.model:
        xe = np.zeros_like(e0)
    if xe is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = np.where(stable, xe / e0, np.nan)
        cross_cv = float(np.where(mask, np.sign(e0) * xe, 0.0).sum() / np.abs(e0[mask]).sum())
    return ModelScore(cv=float(circuit_vulnerability(e0, ex, mask)), v=head_vulnerability(e0, ex, stable),
                      preserved=preserved_fraction(c0, x),
                      rank_correlation=spearman(np.abs(base.effects), np.abs(x.effects)),
                      faithfulness_retained=faithfulness_retained(c0, base, x, min_signal), cross_model=cross,
                      cross_model_cv=cross_cv, logit_diff_drop=logit_diff_drop(base, x))
