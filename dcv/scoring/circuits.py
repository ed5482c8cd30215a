"""The circuits JSON of stage `extract-circuits`: one file per model and capability, checked on reading.

    circuits/discovery/base/<capability>.json      the base on the discovery split (C0 is chosen from it)
    circuits/base/<capability>.json                the base on the scoring split
    circuits/<arm>/seed-<s>/step-<n>/<capability>.json

Each holds the signed head effects e_h (mean over pairs, and per pair: `effects_per_pair`, pairs in the same
order in every model of a split), the mean metric on clean and all-ablated input, the model's own faithfulness
curve, `base_circuit` (F of the base's scoring ranking's top-k in this model), `discovery_circuit` (F of the base's
discovery ranking's top-k in this model, on the scoring pairs) and, for fine-tuned models, the cross-model head
effects. A file that breaks this contract is a DcvError naming the file and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dcv.errors import DcvError
from dcv.layout import BASE


@dataclass
class Circuit:
    """One model's head effects on one capability. Arrays are [layer, head] (per pair: [pair, layer, head])."""

    model: str
    capability: str
    method: str
    effects: np.ndarray
    effects_per_pair: np.ndarray
    abs_effects: np.ndarray
    faithfulness: dict  # {"k": [...], "f": [...]} of this model's own top-k circuits
    base_order: list[tuple[int, int]]  # the base's head ranking (by |e_h| in M0)
    base_k: list[int]
    base_f: list[float]  # F(C0_k | this model) for each k of base_k
    cross_effects: np.ndarray | None
    cross_effects_per_pair: np.ndarray | None
    path: Path
    metric_clean: float | None = None  # mean m on clean input (the clean logit difference on these pairs)
    metric_empty: float | None = None  # mean m with every head mean-ablated
    discovery: dict | None = None  # {"order", "k", "f"}: F of the base's discovery top-k in this model
    split: str | None = None  # the probe split the file was measured on

    @property
    def n_pairs(self) -> int:
        return self.effects_per_pair.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self.effects.shape

    def base_f_at(self, k: int) -> float:
        """F(C0_k | this model) for a base-ranking circuit size k listed in `base_circuit.k`."""
        return self.base_f[self.base_k.index(k)]

    def circuit_f(self, order: list[tuple[int, int]], k: int) -> float | None:
        """F in this model of the top-k heads of `order` (the base's discovery or scoring ranking), read from the
        curve of this file that follows that ranking; None when none does or k is not measured there."""
        curves = [(self.base_order, self.base_k, self.base_f)]
        if self.discovery is not None:
            curves.insert(0, (self.discovery["order"], self.discovery["k"], self.discovery["f"]))
        for o, ks, fs in curves:
            if list(o[:k]) == list(order[:k]) and k in ks:
                f = fs[ks.index(k)]
                return float("nan") if f is None else float(f)
        return None

    @property
    def signal(self) -> float | None:
        """m(M) - m(empty): what faithfulness divides by (None when the file has no metric means)."""
        if self.metric_clean is None or self.metric_empty is None:
            return None
        return self.metric_clean - self.metric_empty


def _array(path: Path, d: dict, key: str, ndim: int, shape: tuple | None = None) -> np.ndarray:
    try:
        a = np.asarray(d[key], dtype=np.float64)
    except KeyError:
        raise DcvError(f"{path}: {key}: missing") from None
    except (TypeError, ValueError):
        raise DcvError(f"{path}: {key}: not a numeric array") from None
    if a.ndim != ndim or (shape is not None and a.shape[-len(shape):] != shape) or not np.all(np.isfinite(a)):
        raise DcvError(f"{path}: {key}: expected a finite {ndim}-d array of shape [..., {shape}], got {a.shape}")
    return a


def _read(path: Path, hint: str) -> dict:
    """A JSON file of extract-circuits, or a DcvError naming it (`hint`: what to do when it is missing)."""
    if not path.is_file():
        raise DcvError(f"{path}: not found ({hint})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DcvError(f"{path}: not valid JSON ({e.msg})") from None


def load_circuit(path: Path) -> Circuit:
    """Read and check one circuits JSON file."""
    path = Path(path)
    d = _read(path, "run stage extract-circuits")
    for key in ("model", "capability", "n_layers", "n_heads", "effects", "effects_per_pair", "base_circuit"):
        if key not in d:
            raise DcvError(f"{path}: {key}: missing")
    shape = (int(d["n_layers"]), int(d["n_heads"]))
    effects = _array(path, d, "effects", 2, shape)
    per_pair = _array(path, d, "effects_per_pair", 3, shape)
    if per_pair.shape[0] < 1:
        raise DcvError(f"{path}: effects_per_pair: no pairs")
    scale = max(float(np.abs(effects).max()), 1e-12)
    if not np.allclose(per_pair.mean(0), effects, rtol=1e-3, atol=1e-4 * scale):
        raise DcvError(f"{path}: effects: not the mean of effects_per_pair over pairs")
    abs_effects = _array(path, d, "abs_effects", 2, shape) if "abs_effects" in d else np.abs(effects)
    bc = d["base_circuit"]
    try:
        order = [(int(l), int(h)) for l, h in bc["order"]]
        base_k = [int(k) for k in bc["k"]]
        base_f = [float("nan") if f is None else float(f) for f in bc["f"]]  # None: F undefined (m(M) = m(empty))
    except (KeyError, TypeError, ValueError):
        raise DcvError(f"{path}: base_circuit: needs 'order' ([[layer, head], ...]), 'k' and 'f'") from None
    if len(base_k) != len(base_f) or not base_k:
        raise DcvError(f"{path}: base_circuit: 'k' and 'f' must be non-empty and of equal length")
    if any(not (0 <= l < shape[0] and 0 <= h < shape[1]) for l, h in order):
        raise DcvError(f"{path}: base_circuit.order: a head outside {shape[0]} layers x {shape[1]} heads")
    cross = d.get("cross_model")
    cross_e = cross_pp = None
    if cross is not None:
        cross_e = _array(path, cross, "effects", 2, shape)
        if cross.get("effects_per_pair") is not None:
            cross_pp = _array(path, cross, "effects_per_pair", 3, shape)
    metric = d.get("metric") or {}
    disc = d.get("discovery_circuit")
    if disc is not None:
        try:
            disc = {"order": [(int(l), int(h)) for l, h in disc["order"]], "k": [int(k) for k in disc["k"]],
                    "f": [None if f is None else float(f) for f in disc["f"]]}
        except (KeyError, TypeError, ValueError):
            raise DcvError(f"{path}: discovery_circuit: needs 'order', 'k' and 'f'") from None
        if len(disc["k"]) != len(disc["f"]):
            raise DcvError(f"{path}: discovery_circuit: 'k' and 'f' must be of equal length")

    def num(key):
        v = metric.get(key)
        return None if v is None else float(v)

    return Circuit(model=str(d["model"]), capability=str(d["capability"]), method=str(d.get("method", "unknown")),
                   effects=effects, effects_per_pair=per_pair, abs_effects=abs_effects,
                   faithfulness=d.get("faithfulness") or {}, base_order=order, base_k=base_k, base_f=base_f,
                   cross_effects=cross_e, cross_effects_per_pair=cross_pp, path=path, metric_clean=num("clean"),
                   metric_empty=num("empty"), discovery=disc, split=d.get("split"))


def capabilities(circuits_dir: Path) -> list[str]:
    """Capabilities with a base circuit, in name order."""
    d = Path(circuits_dir) / BASE
    caps = sorted(p.stem for p in d.glob("*.json"))
    if not caps:
        raise DcvError(f"{d}: no circuits (*.json); run stage extract-circuits")
    return caps


def check_compatible(base: Circuit, other: Circuit) -> None:
    """Same heads, the same probe split and pairs and the same base rankings as the base circuit, or a DcvError
    naming the file."""
    if other.shape != base.shape:
        raise DcvError(f"{other.path}: {other.shape[0]} layers x {other.shape[1]} heads, the base has {base.shape}")
    if other.n_pairs != base.n_pairs:
        raise DcvError(f"{other.path}: effects_per_pair: {other.n_pairs} pairs, the base has {base.n_pairs}")
    if other.split != base.split:
        raise DcvError(f"{other.path}: split: {other.split}, the base in {base.path} was measured on {base.split}")
    if other.base_order != base.base_order:
        raise DcvError(f"{other.path}: base_circuit.order: differs from the base's ranking in {base.path}")
    if (other.discovery or {}).get("order") != (base.discovery or {}).get("order"):
        raise DcvError(f"{other.path}: discovery_circuit.order: differs from the base's in {base.path}")


def check_discovery(discovery: Circuit, base: Circuit) -> None:
    """The base on the discovery split against the base on the scoring split: the same heads, different pairs
    (split names), and the scoring files' `discovery_circuit` follows the discovery ranking."""
    if discovery.shape != base.shape:
        raise DcvError(f"{discovery.path}: {discovery.shape} heads, the base on the scoring split has {base.shape}")
    if discovery.split is not None and discovery.split == base.split:
        raise DcvError(f"{discovery.path}: split: {discovery.split}, the same split as {base.path} (C0 must be "
                       f"chosen on pairs it is not scored on)")
    if base.discovery is None or base.discovery["order"] != discovery.base_order:
        raise DcvError(f"{base.path}: discovery_circuit: missing or not the ranking of {discovery.path} "
                       f"(rerun stage extract-circuits)")


def load_study_mask(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """One study DBM mask file (circuits/<model>/study/<cap>.json): its mask values [layer, head], each in [0, 1],
    checked against `shape` (the base's) when given."""
    path = Path(path)
    d = _read(path, "the study's DBM mask; rerun stage extract-circuits")
    v = _array(path, d, "values", 2, shape)
    if ((v < 0) | (v > 1)).any():
        raise DcvError(f"{path}: values: masks must lie in [0, 1]")
    return v
