"""Heatmap of signed head effects (layers x heads), diverging colours centred at 0, as deterministic PNG bytes."""

from __future__ import annotations

import io

import numpy as np


def heatmap_png(effects, title: str) -> bytes:
    """PNG of effects [layer, head]: red = corrupting the head lowers m (it carries the answer), blue = raises it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    e = np.asarray(effects, dtype=np.float64)
    L, H = e.shape
    vmax = float(np.abs(e).max()) or 1.0
    fig = Figure(figsize=(min(12.0, 2.5 + 0.4 * H), min(12.0, 1.8 + 0.3 * L)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(e, cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(0, H, max(1, H // 16)))
    ax.set_yticks(range(0, L, max(1, L // 16)))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="effect on logit difference")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
