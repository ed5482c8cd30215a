"""What every fine-tuning arm's params section shares: optimisation, budget, checkpoints, precision, LoRA.

Names follow TRL/transformers (`learning_rate`, `per_device_train_batch_size`, ...), so each key maps to the
TrainingArguments/SFTConfig/GRPOConfig field of the same name. Precision (bf16) and gradient checkpointing are
derived from the device unless set: both off on CPU, on with CUDA.

Budgets: `prompts_per_step` is what one optimizer step sees (SFT: batch x accumulation; GRPO divides by its group
size). An arm whose `match_budget_of` names another arm must have the same prompts per step, steps and
checkpoint steps (checked by the params schema), so the arms compare at equal budgets.

Start: an arm trains from the base (`init: base`) or continues another arm's checkpoint (`init: sft`,
`init_step: 25`; null = that arm's final checkpoint), seed by seed: seed s starts from the other arm's seed s (the
study's RL continued from the SFT checkpoint). Its step counts restart at 0 there; its forgetting and circuits are
still measured against the base.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

Scheduler = Literal["constant", "constant_with_warmup", "linear", "cosine"]


class LoraConfig(BaseModel):
    """Low-rank adapters (peft) used when `finetune: lora`. Checkpoints are saved with the adapter merged."""

    model_config = ConfigDict(extra="forbid", strict=True)

    r: int = Field(16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(32, ge=1, le=4096, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1, description="Module names that get adapters.")


class ArmConfig(BaseModel):
    """What every arm shares: optimisation, budget, checkpoints, precision, full fine-tuning or LoRA."""

    model_config = ConfigDict(extra="forbid", strict=True)

    init: str = Field("base", description="Where training starts: `base`, or another registered arm whose checkpoint (`init_step`) this arm continues, seed by seed.")
    init_step: int | None = Field(None, ge=1, description="The checkpoint step of arm `init` to start from (null: its final checkpoint); only with `init` an arm.")
    match_budget_of: str | None = Field(None, description="Another arm whose prompts per step, max_steps and checkpoint steps this arm must equal (null: none).")
    max_steps: int = Field(400, ge=1, le=10_000_000, description="Optimizer steps.")
    save_every: int = Field(200, ge=1, description="Steps between checkpoints (the final step is always one).")
    save_steps: list[int] | None = Field(default_factory=lambda: [25, 50, 100, 200, 400], validate_default=True, description="Explicit checkpoint steps instead of every `save_every` (e.g. log-spaced: fast early change and slow late change both get points); the final step is always one.")
    learning_rate: float = Field(5.0e-4, gt=0.0, le=1.0, description="Peak AdamW learning rate.")
    lr_scheduler_type: Scheduler = Field("constant_with_warmup", description="transformers scheduler name.")
    warmup_steps: int = Field(10, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient-norm clip.")
    per_device_train_batch_size: int = Field(16, ge=1, le=65536, description="Micro-batch per device (GRPO: completions, not prompts).")
    gradient_accumulation_steps: int = Field(1, ge=1, le=4096, description="Micro-batches per optimizer step.")
    logging_steps: int = Field(10, ge=1, description="Steps between logged training metrics (loss, reward).")
    finetune: Literal["full", "lora"] = Field("full", description="Train all weights, or LoRA adapters (`lora`).")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    bf16: bool | Literal["auto"] = Field("auto", description="bf16 mixed precision; auto = on with CUDA (if supported), off on CPU.")
    gradient_checkpointing: bool | Literal["auto"] = Field("auto", description="auto = on with CUDA, off on CPU.")

    @field_validator("save_every")
    @classmethod
    def _cadence(cls, v: int, info: ValidationInfo) -> int:
        steps = info.data.get("max_steps")
        if steps is not None and v > steps:
            raise ValueError(f"larger than max_steps ({steps})")
        return v

    @field_validator("save_steps")
    @classmethod
    def _steps(cls, v: list[int] | None, info: ValidationInfo) -> list[int] | None:
        steps = info.data.get("max_steps")
        if v is not None and (not v or any(x < 1 or (steps is not None and x > steps) for x in v) or len(set(v)) != len(v)):
            raise ValueError(f"must be distinct steps in 1..max_steps ({steps})")
        return v

    @property
    def prompts_per_step(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def checkpoint_steps(self) -> list[int]:
        """Steps that get a checkpoint: `save_steps` (sorted) or every `save_every`, and the last step."""
        if self.save_steps is not None:
            return sorted(set(self.save_steps) | {self.max_steps})
        steps = list(range(self.save_every, self.max_steps + 1, self.save_every))
        return steps if steps and steps[-1] == self.max_steps else steps + [self.max_steps]


def budget_mismatch(a: ArmConfig, b: ArmConfig) -> tuple[str, str] | None:
    """(the key of `a` to change, what differs) when the budgets of `a` and `b` differ, else None."""
    for key, what, x, y in (("max_steps", "max_steps", a.max_steps, b.max_steps),
                            ("save_steps", "checkpoint steps", a.checkpoint_steps(), b.checkpoint_steps()),
                            ("per_device_train_batch_size", "prompts per optimizer step", a.prompts_per_step,
                             b.prompts_per_step)):
        if x != y:
            return key, f"{what} {x} vs {y}"
    return None
