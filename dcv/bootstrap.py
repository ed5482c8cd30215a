"""Hierarchical bootstrap: seeds resampled across runs, probe pairs resampled within each seed.

A draw is a set of weights over the probe pairs (multinomial counts / n), so a mean over resampled pairs is a
weighted mean, and the same weights apply to every model that shares the probe set (base and fine-tuned alike).
"""

from __future__ import annotations

import numpy as np


def pair_weights(rng: np.random.Generator, n_pairs: int, size: tuple[int, ...]) -> np.ndarray:
    """[*size, n_pairs] weights of pairs drawn with replacement; each row sums to 1."""
    return rng.multinomial(n_pairs, np.full(n_pairs, 1.0 / n_pairs), size=size) / n_pairs


def seed_draws(rng: np.random.Generator, n_runs: int, size: tuple[int, ...]) -> np.ndarray:
    """[*size] indices of runs drawn with replacement."""
    return rng.integers(0, n_runs, size=size)


def ci95(samples: np.ndarray) -> dict[str, float]:
    """The percentile 95% interval of bootstrap samples (NaN samples dropped)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return {"low": float("nan"), "high": float("nan")}
    lo, hi = np.percentile(s, [2.5, 97.5])
    return {"low": float(lo), "high": float(hi)}
