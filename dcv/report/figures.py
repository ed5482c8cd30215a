"""The report's figures: matplotlib's Agg backend, fixed sizes and no timestamps, so equal data give equal PNG bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DPI = 100


def color(arm: str, i: int = 0) -> str:
    """The arm's registered colour (the base: dark grey; an arm without one: matplotlib's i-th colour)."""
    from dcv.arms import REGISTRY

    if arm == "base":
        return "#444444"
    return (REGISTRY[arm].color if arm in REGISTRY else "") or f"C{(i + 3) % 10}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "dcv"})
    return plt


def save(fig, path: Path) -> None:
    """PNG without the Software/date metadata matplotlib would write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None}, bbox_inches="tight")
    _plt().close(fig)


def curves(curves: dict[str, list[dict]], key: str, ylabel: str, path: Path) -> None:
    """Mean over seeds (line) and min-max over seeds (band) of `key` against the step, one colour per arm."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, (arm, pts) in enumerate(curves.items()):
        x = [p["step"] for p in pts]
        ax.plot(x, [p[key] for p in pts], "-o", ms=3, color=color(arm, i), label=arm.upper())
        ax.fill_between(x, [p[f"{key}_min"] for p in pts], [p[f"{key}_max"] for p in pts], color=color(arm, i),
                        alpha=0.2, lw=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.legend()
    save(fig, path)


def pareto(points: dict[str, list[tuple[float, float]]], curves: dict[str, list[dict]], path: Path) -> None:
    """Target accuracy (x) against prior accuracy (y): every checkpoint of every seed, and each arm's mean path."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.8))
    for i, arm in enumerate(curves):
        xs, ys = zip(*points[arm]) if points[arm] else ((), ())
        ax.scatter(xs, ys, s=10, alpha=0.35, color=color(arm, i))
        c = curves[arm]
        ax.plot([p["target_accuracy"] for p in c], [p["prior_accuracy"] for p in c], "-o", ms=3, color=color(arm, i),
                label=f"{arm.upper()} (mean over seeds)")
    first = next(iter(curves.values()))[0]
    ax.scatter([first["target_accuracy"]], [first["prior_accuracy"]], marker="*", s=120, color=color("base"),
               zorder=5, label="base")
    ax.set_xlabel("target eval accuracy")
    ax.set_ylabel("prior-capability accuracy (mean)")
    ax.legend(fontsize=7)
    save(fig, path)


def heads(data: dict, path: Path) -> None:
    """v_h of each arm on the base circuit C0 and their difference (other heads grey), values written in."""
    from dcv.plotting import head_map

    plt = _plt()
    arms = data["arms"]
    panels = [(f"$v_h$ {a.upper()}", data["v"][a]) for a in arms]
    panels.append((f"$v_h$ {arms[0].upper()} − {arms[1].upper()}", data["dcv"]))
    n_layers, n_heads = np.array(panels[0][1], dtype=object).shape
    cell = min(0.4, 12.0 / (n_heads * len(panels)))  # inches per head, at most ~14 inches wide in all
    fig, axes = plt.subplots(1, len(panels), figsize=(cell * n_heads * len(panels) + 1.5, cell * n_layers + 1.2),
                             squeeze=False, layout="constrained")
    cells = [tuple(h) for h in data["base_circuit"]]
    for ax, (title, m) in zip(axes[0], panels):
        im = head_map(ax, m, title, vmax=1.0, cmap="coolwarm", annotate=cells, grey_nan=True)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.9, ticks=[-1, 0, 1])
    save(fig, path)


def dcv_bars(rows: list[dict], path: Path, ylabel: str = "DCV = CV(SFT) − CV(RL)") -> None:
    """DCV per capability (and the mean) with 95% CIs, at equal steps and at equal target accuracy."""
    plt = _plt()
    names = [r["capability"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names) + 1.5), 3.2))
    x = np.arange(len(names))
    for j, (key, label) in enumerate((("equal_steps", "equal steps"), ("equal_accuracy", "equal target accuracy"))):
        d = np.array([r[key]["dcv"] if r[key]["dcv"] is not None else np.nan for r in rows], dtype=float)
        lo = np.array([r[key]["low"] if r[key]["low"] is not None else np.nan for r in rows], dtype=float)
        hi = np.array([r[key]["high"] if r[key]["high"] is not None else np.nan for r in rows], dtype=float)
        ax.errorbar(x + (j - 0.5) * 0.25, d, yerr=[d - lo, hi - d], fmt="o", capsize=3, color=("#2ca02c", "#9467bd")[j], label=label)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    save(fig, path)


def scatter_fits(panels: list[dict], path: Path) -> None:
    """Side-by-side scatters with their least-squares line and R²; each panel: x, y, arm (colours), labels, fit, and
    optionally its title (default: the fit's R²)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(min(4.2 * len(panels), 16.0), 3.4), squeeze=False,
                             layout="constrained")
    for ax, p in zip(axes[0], panels):
        groups = sorted(set(p["group"]))
        for i, g in enumerate(groups):
            idx = [k for k, gg in enumerate(p["group"]) if gg == g]
            ax.scatter([p["x"][k] for k in idx], [p["y"][k] for k in idx], s=14, alpha=0.7, color=color(g, i),
                       label=g.upper())
        fit = p["fit"]
        if np.isfinite(fit["r2"]):
            xs = np.linspace(np.nanmin(p["x"]), np.nanmax(p["x"]), 20)
            ax.plot(xs, fit["intercept"] + fit["slope"] * xs, "k--", lw=1)
        r2 = f"{fit['r2']:.2f}" if np.isfinite(fit["r2"]) else "n/a"
        ax.set_title(p.get("title", f"R² = {r2}") + f" (n = {fit['n']})", fontsize=8)
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel(p["ylabel"])
        if len(groups) > 1:
            ax.legend(fontsize=7)
    save(fig, path)
