"""The circuits JSON of stage `extract-circuits`: one file per model and capability, checked on reading.

    circuits/base/<capability>.json
    circuits/<arm>/seed-<s>/step-<n>/<capability>.json

Each holds the signed head effects e_h (mean over pairs, and per pair: `effects_per_pair`, pairs in the same
order in every model), the model's own faithfulness curve, `base_circuit` (F of the base ranking's top-k in this
model, at every k) and, for fine-tuned models, the cross-model head effects. A file that breaks this contract is a
DcvError naming the file and the key.
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

    @property
    def n_pairs(self) -> int:
        return self.effects_per_pair.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self.effects.shape

    def base_f_at(self, k: int) -> float:
        """F(C0_k | this model) for a base-ranking circuit size k listed in `base_circuit.k`."""
        return self.base_f[self.base_k.index(k)]


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


def load_circuit(path: Path) -> Circuit:
    """Read and check one circuits JSON file."""
    path = Path(path)
    if not path.is_file():
        raise DcvError(f"{path}: not found (run stage extract-circuits)")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DcvError(f"{path}: not valid JSON ({e.msg})") from None
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
    return Circuit(model=str(d["model"]), capability=str(d["capability"]), method=str(d.get("method", "unknown")),
                   effects=effects, effects_per_pair=per_pair, abs_effects=abs_effects,
                   faithfulness=d.get("faithfulness") or {}, base_order=order, base_k=base_k, base_f=base_f,
                   cross_effects=cross_e, cross_effects_per_pair=cross_pp, path=path)


def capabilities(circuits_dir: Path) -> list[str]:
    """Capabilities with a base circuit, in name order."""
    d = Path(circuits_dir) / BASE
    caps = sorted(p.stem for p in d.glob("*.json"))
    if not caps:
        raise DcvError(f"{d}: no circuits (*.json); run stage extract-circuits")
    return caps


def check_compatible(base: Circuit, other: Circuit) -> None:
    """Same heads and the same probe pairs as the base circuit, or a DcvError naming the file."""
    if other.shape != base.shape:
        raise DcvError(f"{other.path}: {other.shape[0]} layers x {other.shape[1]} heads, the base has {base.shape}")
    if other.n_pairs != base.n_pairs:
        raise DcvError(f"{other.path}: effects_per_pair: {other.n_pairs} pairs, the base has {base.n_pairs}")
    if other.base_order != base.base_order:
        raise DcvError(f"{other.path}: base_circuit.order: differs from the base's ranking in {base.path}")
