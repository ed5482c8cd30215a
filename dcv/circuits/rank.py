"""Agreement between two head-effect maps (a method against `exact`): rank correlation, top-k overlap, magnitude."""

from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def spearman(a, b) -> float:
    """Spearman's rho of two equal-size arrays (flattened); nan when either is constant."""
    ra = _ranks(np.asarray(a, dtype=np.float64).ravel())
    rb = _ranks(np.asarray(b, dtype=np.float64).ravel())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def top_k(x, k: int) -> set[int]:
    """Flat indices of the k entries of largest |x| (ties in index order)."""
    a = np.abs(np.asarray(x, dtype=np.float64).ravel())
    return {int(i) for i in np.argsort(-a, kind="stable")[:k]}


def topk_overlap(a, b, k: int) -> float:
    """|top-k(|a|) & top-k(|b|)| / k."""
    return len(top_k(a, k) & top_k(b, k)) / k if k > 0 else float("nan")


def magnitude_ratio(estimate, reference) -> float:
    """sum |estimate| / sum |reference| over heads (1 = the same overall size; EAP often falls far below)."""
    den = float(np.abs(np.asarray(reference, dtype=np.float64)).sum())
    return float(np.abs(np.asarray(estimate, dtype=np.float64)).sum()) / den if den > 0 else float("nan")
