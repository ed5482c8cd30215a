"""The study's circuit measures (arXiv 2605.28860), computed from DBM head masks (`dcv.circuits.dbm.HeadMask`).

The study fits a mask m_h in [0, 1] per head on each model separately and reads the binary circuit C = {h: m_h >
0.5}. Its measures, defined here on mask arrays [layer, head]:

- size |C_x|;
- overlap with the base circuit |C_x ∩ C_0| / |C_0| (the study's "overlap" and, by checkpoint, its "retention"),
  beside the symmetric Jaccard |C_x ∩ C_0| / |C_x ∪ C_0|;
- mask shift Δm_h = m_h^x − m_h^0, summarised as its mean over heads and its mean over C_0;
- vulnerable heads of a pair (a, b): heads of C_0 with m_h^a < m_h^b − δ (the heads a drops more than b).

Across seeds, each measure is a mean with a t interval over seeds (`over_seeds`; a difference of two arms:
`dcv.stats.welch`) (one mask per seed and model; the masks are not
refit per probe-pair draw, so probe-pair noise is not in these intervals: DBM is deterministic given the pairs).
Nothing here reads files: score-dcv passes the masks.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from dcv.stats import t_interval


def circuit(mask: np.ndarray) -> np.ndarray:
    """The binary circuit of a mask: m_h > 0.5 (the study's threshold), a bool array [layer, head]."""
    return np.asarray(mask, dtype=float) > 0.5


@dataclass(frozen=True)
class StudyMeasures:
    """One model's measures against the base."""

    size: int
    base_size: int
    overlap: float  # |C_x ∩ C_0| / |C_0| (NaN for an empty base circuit)
    jaccard: float  # |C_x ∩ C_0| / |C_x ∪ C_0| (NaN when both are empty)
    mask_shift: float  # mean over heads of m_x - m_0
    mask_shift_c0: float  # mean over C_0 of m_x - m_0 (NaN for an empty base circuit)


def measures(base: np.ndarray, model: np.ndarray) -> StudyMeasures:
    m0, mx = np.asarray(base, dtype=float), np.asarray(model, dtype=float)
    if m0.shape != mx.shape:
        raise ValueError(f"mask shapes differ: base {m0.shape}, model {mx.shape}")
    c0, cx = circuit(m0), circuit(mx)
    inter, union = int((c0 & cx).sum()), int((c0 | cx).sum())
    n0 = int(c0.sum())
    shift = mx - m0
    return StudyMeasures(size=int(cx.sum()), base_size=n0, overlap=inter / n0 if n0 else float("nan"),
                         jaccard=inter / union if union else float("nan"), mask_shift=float(shift.mean()),
                         mask_shift_c0=float(shift[c0].mean()) if n0 else float("nan"))


def vulnerable_heads(base: np.ndarray, a: np.ndarray, b: np.ndarray, delta: float) -> list[tuple[int, int]]:
    """Heads of the base circuit C_0 whose mask under `a` is below their mask under `b` by more than `delta`."""
    c0 = circuit(base)
    hit = c0 & (np.asarray(a, dtype=float) < np.asarray(b, dtype=float) - delta)
    return [(int(l), int(h)) for l, h in zip(*np.nonzero(hit))]


def over_seeds(values: list[float], level: float = 0.95) -> dict:
    """Mean over seeds with its t interval (sample variance / n, n - 1 df); one seed: no interval."""
    xs = [v for v in values if v == v]
    m = statistics.fmean(xs) if xs else float("nan")
    if len(xs) < 2:
        return {"mean": m, "n": len(xs), "low": float("nan"), "high": float("nan")}
    ci = t_interval(m, [(statistics.variance(xs) / len(xs), len(xs) - 1.0)], level)
    return {"mean": m, "n": len(xs), "low": ci["low"], "high": ci["high"]}

