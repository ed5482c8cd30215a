"""Configuration of stage `score-dcv` (the `dcv` section of params.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ScoreConfig(BaseModel):
    """How circuits are compared: the base circuit's size, the accuracy levels, the bootstrap."""

    model_config = ConfigDict(extra="forbid", strict=True)

    pairs: list[list[str]] = Field(default_factory=lambda: [["sft", "rl"], ["sft", "protect"], ["rl", "protect"]], min_length=1, description="Pairs of arms (a, b) scored as DCV(a, b) = CV^a - CV^b; the first is the headline.")
    faithfulness_target: float = Field(0.8, gt=0.0, le=1.0, description="The base circuit C0 is the smallest base top-k whose faithfulness reaches this.")
    accuracy_levels: list[float] | None = Field(None, description="Target accuracies at which the arms are compared; null: three levels evenly spaced from the base's accuracy to the highest one both arms reach (mean over seeds).")
    n_bootstrap: int = Field(1000, ge=10, le=1_000_000, description="Bootstrap resamples for the 95% CIs.")
    seed: int = Field(0, ge=0, description="Seed of the bootstrap's numpy Generator.")

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
