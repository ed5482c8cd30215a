"""The crossed bootstrap of circuit measures: probe pairs and seeds are two crossed factors (every seed of every arm,
and the base, is measured on the same pairs), so a draw resamples each factor once.

A pair draw is one weight vector over the probe pairs of a capability (multinomial counts / n), so a mean over
resampled pairs is a weighted mean, and the *same* vector weighs the base and every arm and seed (drawing pairs
afresh per seed, as if each seed had its own pairs, treats the design as nested and misstates the variance). A seed
draw picks each arm's runs with replacement, the same picks for every capability.
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


def variance(samples: np.ndarray) -> float:
    """Variance of bootstrap samples (NaN samples dropped; NaN when fewer than two remain)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    return float(s.var(ddof=1)) if s.size > 1 else float("nan")
