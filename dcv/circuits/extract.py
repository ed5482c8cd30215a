"""One model on one capability: head effects, faithfulness curves and cross-model effects as the record that stage
`extract-circuits` writes to `circuits/<model>/<capability>.json` (shared/DESIGN.md fixes its keys), and the
validation of the gradient methods against `exact`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from dcv.circuits.cross_model import cross_model_effects
from dcv.circuits.effects import HeadEffects, head_effects
from dcv.circuits.faithfulness import Curve, circuit_sizes, faithfulness_curve, head_means, head_order, smallest_k
from dcv.circuits.pairs import PairBatch
from dcv.circuits.patching import ProbedModel, probe_model
from dcv.circuits.rank import magnitude_ratio, spearman, topk_overlap

DIGITS = 6  # significant digits kept in the JSON: equal on every rerun, far below the methods' own error


def rounded(x):
    """Floats (nested lists, tensors) to DIGITS significant digits; non-finite values become None (valid JSON)."""
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [rounded(v) for v in x]
    if isinstance(x, float):
        return float(f"{x:.{DIGITS}g}") if math.isfinite(x) else None
    return x


@dataclass
class BaseReference:
    """The base model on a capability: its runs (cross-model patching) and its head ranking (its circuits)."""

    probed: ProbedModel
    order: list[tuple[int, int]]


@dataclass
class Extraction:
    record: dict
    probed: ProbedModel
    effects: HeadEffects
    curve: Curve


def _curve_json(c: Curve) -> dict:
    return {"k": c.k, "f": rounded(c.f), "cpr": rounded(c.cpr), "order": [list(h) for h in c.order]}


def extract(model, batches: list[PairBatch], method: str = "exact", steps: int = 5, sizes: str | int = "all",
            heads_per_forward: int = 32, base: BaseReference | None = None) -> Extraction:
    """Everything measured on one model and capability. Without `base` the model is its own reference (the base:
    `base_circuit` is its own curve, `cross_model` is None)."""
    probed = probe_model(model, batches)
    eff = head_effects(model, batches, method, steps, heads_per_forward, probed=probed)
    L, H = probed.shape
    ks = circuit_sizes(L * H, sizes)
    means = head_means(probed)
    own = faithfulness_curve(probed, head_order(eff.mean), ks, heads_per_forward, means)
    if base is None:
        base_curve, cross = own, None
    else:
        base_curve = faithfulness_curve(probed, base.order, ks, heads_per_forward, means)
        cross_pp = cross_model_effects(base.probed, probed, heads_per_forward)
        cross = {"effects": rounded(cross_pp.mean(0)), "effects_per_pair": rounded(cross_pp)}
    record = {
        "method": method, "steps": eff.steps, "n_pairs": probed.n_pairs, "n_layers": L, "n_heads": H,
        "dtype": str(probed.runs[0].clean_z[0].dtype).removeprefix("torch."),
        "metric": {"clean": rounded(float(eff.m_clean.double().mean())),
                   "corrupt": rounded(float(eff.m_corrupt.double().mean())), "empty": rounded(own.m_empty)},
        "effects": rounded(eff.mean), "abs_effects": rounded(eff.abs_mean), "effects_per_pair": rounded(eff.per_pair),
        "faithfulness": _curve_json(own),
        "base_circuit": _curve_json(base_curve),
        "cross_model": cross,
    }
    return Extraction(record, probed, eff, own)


def validate_methods(probed: ProbedModel, exact: HeadEffects, k: int, steps: int, heads_per_forward: int) -> dict:
    """`eap` and `eap-ig` against `exact` on the same pairs: Spearman rho of the signed mean effects over all heads,
    overlap of the top-k heads by |e| (k: the circuit size, e.g. k80), sum |e| / sum |e_exact|, and seconds given
    the cached clean and corrupted runs (bench/circuits.py times each method from scratch)."""
    out: dict = {"topk_k": k}
    for method in ("eap", "eap-ig"):
        t0 = time.perf_counter()
        est = head_effects(probed.model, [], method, steps, heads_per_forward, probed=probed)
        key = method.replace("-", "_")
        out[f"seconds_{key}"] = round(time.perf_counter() - t0, 3)
        out[f"rho_{key}_vs_exact"] = rounded(spearman(est.mean, exact.mean))
        out[f"topk_overlap_{key}"] = rounded(topk_overlap(est.mean, exact.mean, k))
        out[f"magnitude_ratio_{key}"] = rounded(magnitude_ratio(est.mean, exact.mean))
    return out


def k_at(curve: Curve, target: float) -> tuple[int | None, float | None]:
    """(smallest k with F >= target, F there)."""
    k = smallest_k(curve.k, curve.f, target)
    return k, (None if k is None else curve.f[curve.k.index(k)])
