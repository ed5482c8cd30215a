"""The one layers x heads map every figure draws (circuit heatmaps, head-vulnerability panels): matplotlib only,
deterministic bytes (no timestamps or software tags in the PNG)."""

from __future__ import annotations

import numpy as np


def head_map(ax, values, title: str, vmax: float | None = None, cmap: str = "RdBu", annotate=(),
             grey_nan: bool = False, vmin: float | None = None):
    """Draw `values` [layer, head] on `ax` (None/NaN cells grey when `grey_nan`), colours from `vmin` (default
    -vmax: symmetric about 0) to `vmax` (default: the largest |value|); write the value into each (layer, head)
    cell of `annotate`."""
    import matplotlib

    a = np.array([[np.nan if v is None else v for v in row] for row in np.asarray(values, dtype=object)], dtype=float)
    L, H = a.shape
    vmax = vmax if vmax is not None else (float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0) or 1.0
    cm = matplotlib.colormaps[cmap].with_extremes(bad="#e6e6e6") if grey_nan else matplotlib.colormaps[cmap]
    im = ax.imshow(np.ma.masked_invalid(a), cmap=cm, vmin=-vmax if vmin is None else vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    for l, h in annotate:
        if np.isfinite(a[l, h]):
            ax.text(h, l, f"{a[l, h]:.2f}", ha="center", va="center", fontsize=6)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(0, H, max(1, H // 16)))
    ax.set_yticks(range(0, L, max(1, L // 16)))
    ax.grid(False)
    return im
