"""Configuration of stage `extract-circuits` (the `circuits` section of params.yaml)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dcv.memory import batch_size_type

PairsPerBatch = batch_size_type(100_000)

Method = Literal["exact", "eap", "eap-ig", "dbm"]  # the entries of dcv.circuits.methods.REGISTRY (a test keeps them equal)


class CircuitsConfig(BaseModel):
    """How head effects and faithfulness curves are measured."""

    # `validate` is a BaseModel attribute: the field is `validate_methods`, written `validate` in params.yaml.
    model_config = ConfigDict(extra="forbid", strict=True, validate_by_alias=True, validate_by_name=False,
                              serialize_by_alias=True)

    method: Method = Field("exact", description="exact: one patched forward per head (the reference, affordable on "
                           "small models); eap: gradient estimate, 2 forwards + 1 backward; eap-ig: eap averaged over "
                           "steps; dbm: a learnt binary head mask (Differentiable Binary Masking), no per-pair effects.")
    eap_ig_steps: int = Field(5, ge=1, le=1000, description="Points between corrupted and clean input for eap-ig.")
    dbm_steps: int = Field(60, ge=1, le=100_000, description="dbm: optimisation steps (full batch: one forward and "
                           "backward per probe batch each).")
    dbm_lr: float = Field(0.35, gt=0, le=100, description="dbm: Adam learning rate of the mask logits.")
    dbm_lambda: float = Field(0.01, ge=0, le=1000, description="dbm: sparsity weight per head (loss = mean -log "
                              "p(answer) + lambda * sum of masks): a head lowering the NLL by less is dropped.")
    dbm_temperature_start: float = Field(1.0, gt=0, le=1000, description="dbm: temperature T of m = sigmoid(logit / T) "
                                         "at the first step.")
    dbm_temperature_end: float = Field(0.01, gt=0, le=1000, description="dbm: T at the last step (annealed "
                                       "geometrically); small: masks end near 0 or 1.")
    dbm_init: float = Field(1.0, ge=-100, le=100, description="dbm: initial logit of every head (> 0: every head "
                            "kept at the start).")
    study_capabilities: list[str] = Field(default_factory=lambda: ["target"], description="Capabilities on which "
                                          "every model also gets the study's DBM head mask (dbm_* knobs), whatever "
                                          "`method` is: circuits/<model>/study/<capability>.json, read by score-dcv's "
                                          "study measures; [] = none.")
    study_effects: Literal["base", "all"] = Field("base", description="base: a study capability's head effects, "
                                                 "curves and cross-model effects (circuits/<model>/<capability>.json) "
                                                 "on the base only; fine-tuned models get its DBM mask, all that "
                                                 "score-dcv reads there; all: on every model too.")
    batch_size: PairsPerBatch = Field(64, description="Probe pairs per batch; auto: the largest that "
                                                    "fits the free memory of a CUDA device (dcv.memory), 64 elsewhere.")
    heads_per_forward: int = Field(32, ge=1, le=100_000, description="Interventions (patched heads, circuit sizes, "
                                   "eap-ig steps) stacked into one forward: rows = batch_size x this.")
    faithfulness_sizes: Union[Literal["all"], int] = Field("all", description="Circuit sizes at which F is measured: "
                                                           "all (0..every head) or a count of evenly spaced sizes.")
    checkpoint_sizes: Union[Literal["all"], int] = Field(5, description="Circuit sizes of a fine-tuned model's own "
                                                         "and base-ranking curves (its cpr in MLflow): all or a count "
                                                         "of evenly spaced sizes. The curve of the base's discovery "
                                                         "ranking, where score-dcv reads F(C0), keeps faithfulness_sizes.")
    validate_methods: bool = Field(True, alias="validate", description="On the base, also run eap and eap-ig and "
                                   "compare them with exact (rank correlation, top-k overlap, magnitude ratio).")
    validate_heads: int | None = Field(None, ge=1, le=10_000_000, description="With validate: exact patching of this "
                                       "many heads sampled with a seeded permutation (seed 0) as the check, the "
                                       "methods compared on those heads; null: every head (one patched forward each).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto: bfloat16 on cuda, float32 on cpu.")

    @model_validator(mode="after")
    def _annealing(self):
        if self.dbm_temperature_end > self.dbm_temperature_start:
            raise ValueError("dbm_temperature_end must not exceed dbm_temperature_start (the temperature anneals down)")
        return self


    @field_validator("faithfulness_sizes", "checkpoint_sizes", mode="before")
    @classmethod
    def _sizes(cls, v):
        if v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 2):
            return v
        raise ValueError("must be 'all' or an integer >= 2")
