"""Every circuit measure of every checkpoint, as one typed table (`measurements/circuits.csv`, stage score-dcv):
what the report joins with the measurement table to ask which measure predicts forgetting."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CircuitScore:
    """One checkpoint on one capability, against the base circuit C0 of that capability."""

    model: str  # `<arm>/seed-<s>/step-<n>`
    arm: str
    seed: int
    step: int
    capability: str
    target_accuracy: float
    cv: float
    preserved: float
    rank_correlation: float | None
    faithfulness_retained: float | None  # empty: undefined (the guard of docs/design.md)
    cross_model_cv: float | None
    logit_diff_drop: float | None = None  # 1 - m(Mx) / m(M0) on the same (scoring) pairs: a predictor baseline
