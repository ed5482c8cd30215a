"""Configuration of stage `extract-circuits` (the `circuits` section of params.yaml)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

Method = Literal["exact", "eap", "eap-ig"]


class CircuitsConfig(BaseModel):
    """How head effects and faithfulness curves are measured."""

    # `validate` is a BaseModel attribute: the field is `validate_methods`, written `validate` in params.yaml.
    model_config = ConfigDict(extra="forbid", strict=True, validate_by_alias=True, validate_by_name=False,
                              serialize_by_alias=True)

    method: Method = Field("exact", description="exact: one patched forward per head (the reference, affordable on "
                           "small models); eap: gradient estimate, 2 forwards + 1 backward; eap-ig: eap averaged over steps.")
    eap_ig_steps: int = Field(5, ge=1, le=1000, description="Points between corrupted and clean input for eap-ig.")
    batch_size: int = Field(64, ge=1, le=100_000, description="Probe pairs per batch.")
    heads_per_forward: int = Field(32, ge=1, le=100_000, description="Interventions (patched heads, circuit sizes, "
                                   "eap-ig steps) stacked into one forward: rows = batch_size x this.")
    faithfulness_sizes: Union[Literal["all"], int] = Field("all", description="Circuit sizes at which F is measured: "
                                                           "all (0..every head) or a count of evenly spaced sizes.")
    validate_methods: bool = Field(True, alias="validate", description="On the base, also run eap and eap-ig and "
                                   "compare them with exact (rank correlation, top-k overlap, magnitude ratio).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto: bfloat16 on cuda, float32 on cpu.")

    @field_validator("faithfulness_sizes", mode="before")
    @classmethod
    def _sizes(cls, v):
        if v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 2):
            return v
        raise ValueError("must be 'all' or an integer >= 2")
