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

    e = np.asarray(effects, dtype=np.float64)
    L, H = e.shape
    vmax = 1.0 if mask else (float(np.abs(e).max()) or 1.0)
    fig = Figure(figsize=(min(12.0, 2.5 + 0.4 * H), min(12.0, 1.8 + 0.3 * L)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(e, cmap="Reds" if mask else "RdBu", vmin=0.0 if mask else -vmax, vmax=vmax, aspect="auto",
                   interpolation="nearest")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(0, H, max(1, H // 16)))
    ax.set_yticks(range(0, L, max(1, L // 16)))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="mask (1 = head kept)" if mask else "effect on logit difference")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
