"""Heatmap of signed head effects (layers x heads), diverging colours centred at 0, or of a learnt head mask (dbm:
0 to 1), as deterministic PNG bytes."""

from __future__ import annotations

import io

import numpy as np


def record_png(record: dict, title: str) -> bytes:
    """The heatmap of a circuits JSON record: its signed effects, or, for a method without effects (dbm), its final
    mask values (`mask.values`, red = needed)."""
    if record.get("effects") is not None:
        return heatmap_png(record["effects"], title)
    return heatmap_png(record["mask"]["values"], title, mask=True)


def heatmap_png(effects, title: str, mask: bool = False) -> bytes:
    """PNG of effects [layer, head]: red = corrupting the head lowers m (it carries the answer), blue = raises it.
    With `mask`, values in [0, 1] (a learnt mask) in white to red: red = the head is kept (needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dcv.plotting import head_map

    e = np.asarray(effects, dtype=np.float64)
    L, H = e.shape
    w, h = min(12.0, 2.5 + 0.4 * H), min(12.0, 1.8 + 0.3 * L)
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    # Margins in inches for the labels, title and colourbar (tight_layout measured every text: half the time of
    # a PNG, and the stage draws one per model and capability).
    fig.subplots_adjust(left=0.65 / w, right=1 - 0.25 / w, bottom=0.5 / h, top=1 - 0.35 / h)
    ax = fig.add_subplot()
    if mask:
        im = head_map(ax, e, title, vmax=1.0, vmin=0.0, cmap="Reds")
    else:
        im = head_map(ax, e, title)
    fig.colorbar(im, ax=ax, label="mask (1 = head kept)" if mask else "effect on logit difference")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
