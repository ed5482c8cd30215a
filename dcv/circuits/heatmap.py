"""Heatmap of signed head effects (layers x heads), diverging colours centred at 0, as deterministic PNG bytes."""

from __future__ import annotations

import io

import numpy as np


def heatmap_png(effects, title: str) -> bytes:
    """PNG of effects [layer, head]: red = corrupting the head lowers m (it carries the answer), blue = raises it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dcv.plotting import head_map

    e = np.asarray(effects, dtype=np.float64)
    L, H = e.shape
    fig = Figure(figsize=(min(12.0, 2.5 + 0.4 * H), min(12.0, 1.8 + 0.3 * L)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = head_map(ax, e, title)
    fig.colorbar(im, ax=ax, label="effect on logit difference")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
