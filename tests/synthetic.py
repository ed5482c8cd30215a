"""Synthetic inputs of the late stages, in the documented formats: circuits JSON (the extract-circuits contract: the
base on the discovery and the scoring split, every checkpoint on the scoring split) and the measurement table
(`dcv.measurements`). A fine-tuned model's head effects are the base's scaled by (1 - degradation), plus per-pair
noise, so its CV is about the degradation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dcv import io

CAPS = ("ioi", "induction")
SHAPE = (2, 4)
STEPS = (3, 6)  # checkpoints of every arm and seed; 6 is the last


def base_effects(cap: str) -> np.ndarray:
    rng = np.random.default_rng(sum(map(ord, cap)))
    e = rng.normal(0.0, 0.02, SHAPE)
    e[1, 2], e[0, 1], e[1, 0] = -2.0, -1.2, 0.6
    return e


def _curve_f(e: np.ndarray, order: list[tuple[int, int]], ref: np.ndarray) -> list[float]:
    """F of the top-k (in `order`) at each k, as each head's share of the reference total."""
    total = np.abs(ref).sum()
    vals = [np.sign(ref[l, h]) * e[l, h] for l, h in order]
    return [float(x) for x in np.concatenate([[0.0], np.cumsum(vals) / total])]


def circuit(model: str, cap: str, scale: float, n_pairs: int, rng: np.random.Generator, cross: bool = True,
            zero: list[tuple[int, int]] = (), split: str = "probes", e0: np.ndarray | None = None) -> dict:
    e0 = base_effects(cap) if e0 is None else e0
    order = [(int(i) // SHAPE[1], int(i) % SHAPE[1]) for i in np.argsort(-np.abs(e0).ravel(), kind="stable")]
    mean = e0 * scale
    for l, h in zero:
        mean[l, h] = 0.0
    noise = rng.normal(0.0, 0.3, (n_pairs, *SHAPE))
    noise -= noise.mean(0)
    for l, h in zero:
        noise[:, l, h] = 0.0
    per_pair = mean[None] + noise * (np.abs(mean)[None] + 0.05)
    eff = per_pair.mean(0)
    own = [(int(i) // SHAPE[1], int(i) % SHAPE[1]) for i in np.argsort(-np.abs(eff).ravel(), kind="stable")]
    d = {"model": model, "model_dir": f"models/{model}", "capability": cap, "method": "exact", "steps": None,
         "n_pairs": n_pairs, "n_layers": SHAPE[0], "n_heads": SHAPE[1],
         "metric": {"clean": 3.0 * scale, "corrupt": -1.0, "empty": 0.1},
         "effects": eff.tolist(), "abs_effects": np.abs(per_pair).mean(0).tolist(), "effects_per_pair": per_pair.tolist(),
         "faithfulness": {"k": list(range(SHAPE[0] * SHAPE[1] + 1)), "f": _curve_f(eff, own, eff), "cpr": 0.9},
         "base_circuit": {"order": [list(h) for h in order], "k": list(range(len(order) + 1)),
                          "f": _curve_f(eff, order, e0)},
         "discovery_circuit": {"order": [list(h) for h in order], "k": list(range(len(order) + 1)),
                               "f": _curve_f(eff, order, e0), "cpr": 0.9},
         "cross_model": None, "split": split}
    if cross and model != "base":
        x = e0 * (1.0 - scale)
        xp = x[None] + rng.normal(0.0, 0.01, (n_pairs, *SHAPE))
        d["cross_model"] = {"effects": xp.mean(0).tolist(), "effects_per_pair": xp.tolist()}
    return d


STUDY_CAP = "target"
STUDY_BASE = np.array([[0.95, 0.9, 0.05, 0.1], [0.85, 0.02, 0.99, 0.03]])  # C0 = L0H0, L0H1, L1H0, L1H2
STUDY_DROP = np.array([[1.2, 0.4, 0.0, 0.0], [0.9, 0.0, 0.6, 0.0]])  # how fast each C0 head's mask falls


def study_mask(dg: float) -> dict:
    """The study's DBM mask file of a model degraded by dg: C0's masks fall with dg at their own rates (dg 0.6:
    L0H0 and L1H0 leave C0, overlap 0.5; dg <= 0.2: none does, overlap 1)."""
    v = np.clip(STUDY_BASE * (1.0 - dg * STUDY_DROP), 0.0, 1.0)
    return {"capability": STUDY_CAP, "method": "dbm", "values": v.tolist()}


def accuracy(arm: str, step: int, seed: int) -> float:
    """SFT (and any arm but rl) learns fast, RL slowly; the base (step 0) is at 0.25."""
    if step == 0:
        return 0.25
    top = 0.6 if arm == "rl" else 1.0
    return round(0.25 + (top - 0.25) * min(1.0, step / (6.0 if arm == "rl" else 3.0)) - 0.01 * seed, 4)


def write(root: Path, seeds=(0, 1, 2), degrade: dict | None = None, n_pairs: int = 16, same_arms: bool = False,
          caps=CAPS, steps=STEPS, table: bool = True, starts: dict | None = None, study: bool = True) -> Path:
    """circuits/ and the measurement table (measurements/models.csv) under `root`. degrade: arm -> degradation at
    the last step (linear in step); the arms are its keys. `table`: False when a real evaluate-forgetting writes it.
    starts: arm -> (arm, step) of the checkpoint it continues (its rows' `init`, seed by seed). `study`: the study's
    DBM masks on `target` too (`study_mask`)."""
    from dcv.measurements import Measurement
    from dcv.tables import write_table

    degrade = degrade or {"sft": 0.6, "rl": 0.15}
    arms = list(degrade)
    rng = np.random.default_rng(0)
    rows = [Measurement("base", "base", None, 0, False, c, 1.0, 3.0, 0.25, 1.0, 0.0, 0.0, 0.0) for c in caps]
    for c in caps:
        io.write_json(root / "circuits/base" / f"{c}.json", circuit("base", c, 1.0, n_pairs, rng))
    if study:
        io.write_json(root / "circuits/base/study" / f"{STUDY_CAP}.json", study_mask(0.0))
    for c in caps:
        io.write_json(root / "circuits/discovery/base" / f"{c}.json",
                      circuit("discovery/base", c, 1.0, n_pairs, np.random.default_rng([7, len(c)]), split="discovery"))
    for arm in arms:
        for s in seeds:
            for st in steps:
                src = arms[0] if same_arms else arm
                dg = degrade[src] * st / steps[-1] + 0.03 * s
                r = np.random.default_rng([s, st, 0 if same_arms else arms.index(arm)])
                mid = f"{arm}/seed-{s}/step-{st}"
                if study:
                    io.write_json(root / f"circuits/{mid}/study/{STUDY_CAP}.json", study_mask(dg))
                for c in caps:
                    io.write_json(root / f"circuits/{mid}/{c}.json", circuit(mid, c, 1.0 - dg, n_pairs, r))
                    init = "base" if arm not in (starts or {}) else f"{starts[arm][0]}/seed-{s}/step-{starts[arm][1]}"
                    rows.append(Measurement(mid, arm, s, st, st == steps[-1], c, 1.0 - dg / 2, 3.0 * (1 - dg),
                                            accuracy(src, st, s), 0.5, dg, dg, 10.0 * dg, init))
    if table:
        write_table(root / "measurements/models.csv", rows, Measurement)
    return root


def tiny_project(dest: Path, seeds=(0,), steps=STEPS, noise: dict | None = None) -> Path:
    """prepare-data and base of the tiny world (the real CLI), then arms whose checkpoints are the base plus seeded
    weight noise growing with the step (no training): noise: arm -> std at the last step."""
    import shutil

    import torch
    from typer.testing import CliRunner

    from dcv.models import load_model, save_model
    from stages.cli import app

    for name in ("prepare-data", "base"):
        r = CliRunner().invoke(app, ["stage", name, "--params", str(dest / "params.yaml")])
        assert r.exit_code == 0, r.output
    noise = noise or {"sft": 0.08, "rl": 0.02}
    for arm, sigma in noise.items():
        for s in seeds:
            for st in steps:
                model, tok = load_model(dest / "models/base")
                g = torch.Generator().manual_seed(1000 * s + st + (0 if arm == "sft" else 7))
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(torch.randn(p.shape, generator=g) * sigma * st / steps[-1])
                d = dest / f"models/{arm}/seed-{s}/checkpoints/step-{st}"
                save_model(model, tok, d, {"tokenizer": "word-level", "arm": arm, "seed": s, "step": st,
                                           "config": {"learning_rate": 0.001}})
            shutil.copytree(dest / f"models/{arm}/seed-{s}/checkpoints/step-{steps[-1]}", dest / f"models/{arm}/seed-{s}/final")
        io.write_json(dest / f"metrics/{arm}.json", {
            "arm": arm, "description": f"{arm}: the base plus weight noise (test)", "prepared": {},
            "config": {"finetune": "full", "learning_rate": 0.001},
            "budget": {"max_steps": steps[-1], "prompts_per_step": 4, "checkpoint_steps": list(steps)},
            "seeds": {str(s): {"wall_s": 1.0, "checkpoint_steps": list(steps), "last_logs": {}} for s in seeds}})
    return dest
