"""One model on one capability: head effects, faithfulness curves and cross-model effects as the record that stage
`extract-circuits` writes to `circuits/<model>/<capability>.json` (shared/DESIGN.md fixes its keys), and the
validation of the registered methods against the reference (`exact`).

A method without per-pair effects (`dbm`, a learnt head mask) writes `effects`, `abs_effects` and
`effects_per_pair` as null and a `mask` block instead: `values` (final masks [layer, head], 1 = needed), `logits`,
`circuit` (heads with mask > 0.5, [[layer, head], ...]), `size`, `f` (F of that circuit), `nll_circuit`, `knobs` and
the per-step `curve`; its faithfulness curve ranks heads by mask logit."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from dcv.circuits.config import CircuitsConfig
from dcv.circuits.cross_model import cross_model_effects
from dcv.circuits.effects import HeadEffects
from dcv.circuits.faithfulness import Curve, circuit_sizes, faithfulness_curve, head_means, smallest_k
from dcv.circuits.methods import BoundMethod, bind, validated
from dcv.circuits.pairs import PairBatch
from dcv.circuits.patching import ProbedModel, probe_model
from dcv.circuits.rank import magnitude_ratio, spearman, topk_overlap

DIGITS = 6  # significant digits kept in the JSON: equal on every rerun, far below the methods' own error


def rounded(x):
    """Floats (nested lists, tensors) to DIGITS significant digits; non-finite values become None (valid JSON)."""
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
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
    effects: HeadEffects  # or another result of the bound method (same interface: scores, order(), circuit, ...)
    curve: Curve


def _curve_json(c: Curve) -> dict:
    return {"k": c.k, "f": rounded(c.f), "cpr": rounded(c.cpr), "order": [list(h) for h in c.order]}


def extract(model, batches: list[PairBatch], method: str | BoundMethod = "exact", steps: int = 5,
            sizes: str | int = "all", heads_per_forward: int = 32, base: BaseReference | None = None,
            checkpoint_sizes: str | int | None = None) -> Extraction:
    """Everything measured on one model and capability. `method` is a bound method (dcv.circuits.methods.bind), or
    a name bound with `eap_ig_steps=steps` and `heads_per_forward`. Without `base` the model is its own reference
    (the base: `base_circuit` is its own curve, `cross_model` is None). With `base`, the own and base-ranking
    curves are measured at `checkpoint_sizes` (None: `sizes`)."""
    bound = bind(method, eap_ig_steps=steps, heads_per_forward=heads_per_forward)
    probed = probe_model(model, batches)
    eff = bound(model, batches, probed=probed)
    L, H = probed.shape
    ks = circuit_sizes(L * H, sizes if base is None or checkpoint_sizes is None else checkpoint_sizes)
    means = head_means(probed)
    own = faithfulness_curve(probed, eff.order(), ks, heads_per_forward, means)
    circuit_f = None
    if eff.circuit is not None:  # a method that chooses its own circuit: F of exactly that set
        k = len(eff.circuit)
        circuit_f = own.f[own.k.index(k)] if k in own.k else \
            faithfulness_curve(probed, eff.circuit, [0, k], heads_per_forward, means).f[1]
    if base is None:
        base_curve, cross = own, None
    else:
        base_curve = faithfulness_curve(probed, base.order, ks, heads_per_forward, means)
        cross_pp = cross_model_effects(base.probed, probed, heads_per_forward)
        cross = {"effects": rounded(cross_pp.mean(0)), "effects_per_pair": rounded(cross_pp)}
    record = {
        "method": bound.name, "steps": bound.steps, "n_pairs": probed.n_pairs, "n_layers": L, "n_heads": H,
        "dtype": str(probed.runs[0].clean_z[0].dtype).removeprefix("torch."),
        "metric": {"clean": rounded(float(eff.m_clean.double().mean())),
                   "corrupt": rounded(float(eff.m_corrupt.double().mean())), "empty": rounded(own.m_empty)},
        **rounded(eff.record_fields(circuit_f)),
        "faithfulness": _curve_json(own),
        "base_circuit": _curve_json(base_curve),
        "cross_model": cross,
    }
    return Extraction(record, probed, eff, own)


def study_mask(probed: ProbedModel, bound: BoundMethod, heads_per_forward: int = 32) -> dict:
    """The study's record of one model on one capability: a learnt head mask (`bound`: method dbm) on the cached runs
    of an extraction, with F of its binary circuit on the same pairs. Keys: method, steps, n_pairs, n_layers,
    n_heads, and the mask block's values, logits, circuit, size, f, nll_circuit, knobs, curve."""
    t0 = time.perf_counter()
    m = bound(probed.model, [], probed=probed)
    L, H = probed.shape
    ks = sorted({0, len(m.circuit)})
    f = faithfulness_curve(probed, m.circuit, ks, heads_per_forward, head_means(probed)).f[-1]
    return {"method": bound.name, "steps": bound.steps, "n_pairs": probed.n_pairs, "n_layers": L, "n_heads": H,
            **rounded(m.record_fields(f)["mask"]), "seconds": round(time.perf_counter() - t0, 3)}


def validate_methods(probed: ProbedModel, reference: HeadEffects, k: int, config: CircuitsConfig | None = None) -> dict:
    """Every method registered with `validate` (eap, eap-ig), bound from `config`, against the reference's effects
    on the same pairs: Spearman rho of the signed mean effects over all heads, overlap of the top-k heads by |e|
    (k: the circuit size, e.g. k80), sum |e| / sum |e_ref|, and seconds given the cached clean and corrupted runs
    (bench/circuits.py times each method from scratch). Keys: `<stat>_<method>` (`-` as `_`), `rho_<method>_vs_<ref>`."""
    return _compare(probed, reference.scores.flatten(), reference.method, k, config, None)


def validate_on_sample(probed: ProbedModel, n: int, k: int, config: CircuitsConfig, seed: int = 0) -> dict:
    """`validate_methods` against exact patching of `n` sampled heads only (`sampled_heads`, `seed`): rho, the
    magnitude ratio and the top-k overlap (k scaled to the sample: round(k x n / heads), at least 1) over those heads.
    Keys as validate_methods', plus `validate_heads` (n) and `seconds_exact_sample`."""
    from dcv.circuits.effects import exact_heads, sampled_heads

    L, H = probed.shape
    heads = sampled_heads((L, H), n, seed)
    t0 = time.perf_counter()
    ref = exact_heads(probed, heads, config.heads_per_forward).mean(0)
    out = {"validate_heads": len(heads), "seconds_exact_sample": round(time.perf_counter() - t0, 3)}
    ks = max(1, round(k * len(heads) / (L * H)))
    return {**out, **_compare(probed, ref, "exact", ks, config, [l * H + h for l, h in heads])}


def _compare(probed: ProbedModel, ref: torch.Tensor, ref_name: str, k: int, config: CircuitsConfig | None,
             idx: list[int] | None) -> dict:
    """The validated methods' scores (on the heads `idx` of the flattened layer x head grid; None: all) against
    `ref`, the reference's scores on the same heads."""
    out: dict = {"topk_k": k}
    for m in validated():
        t0 = time.perf_counter()
        est = m.bind(config)(probed.model, [], probed=probed).scores.flatten()
        est = est if idx is None else est[idx]
        key = m.name.replace("-", "_")
        out[f"seconds_{key}"] = round(time.perf_counter() - t0, 3)
        out[f"rho_{key}_vs_{ref_name.replace('-', '_')}"] = rounded(spearman(est, ref))
        out[f"topk_overlap_{key}"] = rounded(topk_overlap(est, ref, k))
        out[f"magnitude_ratio_{key}"] = rounded(magnitude_ratio(est, ref))
    return out


def k_at(curve: Curve, target: float) -> tuple[int | None, float | None]:
    """(smallest k with F >= target, F there)."""
    k = smallest_k(curve.k, curve.f, target)
    return k, (None if k is None else curve.f[curve.k.index(k)])
