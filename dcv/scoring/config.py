"""Configuration of stage `score-dcv` (the `dcv` section of params.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class GuardConfig(BaseModel):
    """When a ratio is left undefined rather than divided by noise (docs/design.md, "Guards")."""

    model_config = ConfigDict(extra="forbid", strict=True)

    min_relative: float = Field(0.1, ge=0.0, le=1.0, description="A head of C0 whose |e_h(M0)| on the scoring split is below this share of C0's mean |e(M0)| is unstable: no v_h or cross-model ratio.")
    se_multiple: float = Field(2.0, ge=0.0, le=10.0, description="A head of C0 whose |e_h(M0)| is within this many standard errors (over the scoring pairs) of 0 is unstable too.")
    min_signal: float = Field(0.1, gt=0.0, le=1.0, description="Faithfulness retained is undefined for a model whose m(M) - m(empty) is below this share of the base's, or when F(C0 | M0) on the scoring split is below it.")


class ScoreConfig(BaseModel):
    """How circuits are compared: the base circuit's size, the accuracy levels, the intervals."""

    model_config = ConfigDict(extra="forbid", strict=True)

    pairs: list[list[str]] = Field(default_factory=lambda: [["sft", "rl"], ["sft", "protect"], ["rl", "protect"], ["sft", "rl_sft"], ["rl", "rl_sft"]], min_length=1, description="Pairs of arms (a, b) scored as DCV(a, b) = CV^a - CV^b; the first is the headline.")
    faithfulness_target: float = Field(0.8, gt=0.0, le=1.0, description="The base circuit C0 is the smallest base top-k whose faithfulness reaches this.")
    accuracy_levels: list[float] | None = Field(None, description="Target accuracies at which the arms are compared (CV and forgetting interpolated between checkpoints); null: three levels evenly spaced from the base's accuracy to the highest one every seed of both arms reaches. Levels outside a seed's range are not reported.")
    accuracy_tolerance: float = Field(0.05, ge=0.0, le=1.0, description="An equal-accuracy level counts only when every seed of both arms has a measured checkpoint within this accuracy of it (interpolation bridges at most this much); others are printed with their gap and left out of the headline.")
    n_bootstrap: int = Field(1000, ge=10, le=1_000_000, description="Bootstrap draws: one probe-pair weight vector per draw and capability, shared by the base and every arm and seed; seeds resampled on top.")
    n_permutations: int = Field(9999, ge=99, le=1_000_000, description="Random relabellings of a permutation test when the exact one has more than 20000.")
    guards: GuardConfig = Field(default_factory=GuardConfig)
    seed: int = Field(0, ge=0, description="Seed of the bootstrap's and the permutation tests' numpy Generator.")
    study_delta: float = Field(0.2, ge=0.0, le=1.0, description="The study's vulnerable heads of a pair (a, b): heads "
                               "of the base's DBM circuit whose mask under a is below their mask under b by more than "
                               "this (dcv.scoring.study).")

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v: list[list[str]]) -> list[list[str]]:
        if any(len(p) != 2 or p[0] == p[1] for p in v) or len({tuple(p) for p in v}) != len(v):
            raise ValueError("must be distinct pairs [a, b] of two different arms")
        return v

    @field_validator("accuracy_levels")
    @classmethod
    def _levels(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            if not v or any(not 0.0 <= x <= 1.0 for x in v) or len(set(v)) != len(v):
                raise ValueError("must be a non-empty list of distinct accuracies in [0, 1], or null")
            return sorted(v)
        return v
