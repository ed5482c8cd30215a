"""Configuration of the fine-tuning arms: every TRL knob that matters, written out (no version-dependent default).

Names follow TRL/transformers (`learning_rate`, `per_device_train_batch_size`, ...), so each key maps to the
TrainingArguments/SFTConfig/GRPOConfig field of the same name. Precision (bf16) and gradient checkpointing are
derived from the device unless set: both off on CPU (shared/STACK.md gotcha 4), on with CUDA.

Budgets: an optimizer step of SFT sees `per_device_train_batch_size * gradient_accumulation_steps` prompts; one of
GRPO sees that product divided by `num_generations` (TRL counts completions in its batch sizes). `prompts_per_step`
gives both; `stages/params.py` requires equal prompts per step, steps and checkpoint cadence unless
`rl.match_sft_budget: false`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

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


class CheckpointEvalConfig(BaseModel):
    """What is measured at each checkpoint."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_new_tokens: int = Field(4, ge=1, le=512, description="Greedy tokens generated per target eval prompt.")
    batch_size: int = Field(128, ge=1, le=4096, description="Prompts per forward pass in evaluation.")
    kl_samples: int = Field(4, ge=1, le=1024, description="Completions sampled from the base per target eval prompt for the sampled-sequence forward KL.")
    kl_max_new_tokens: int = Field(6, ge=1, le=4096, description="Longest sampled completion for the sampled-sequence KL (ends earlier at end-of-sequence).")
    kl_seed: int = Field(0, ge=0, description="Seed of the base's samples (the same samples score every checkpoint).")


class ArmConfig(BaseModel):
    """What both arms share: optimisation, budget, checkpoints, precision, full fine-tuning or LoRA."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_steps: int = Field(400, ge=1, le=10_000_000, description="Optimizer steps.")
    save_every: int = Field(50, ge=1, description="Steps between checkpoints (the final step is always one).")
    save_steps: list[int] | None = Field(None, description="Explicit checkpoint steps instead of every `save_every` (e.g. log-spaced: fast early change and slow late change both get points); the final step is always one.")
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
    eval: CheckpointEvalConfig = Field(default_factory=CheckpointEvalConfig)

    @field_validator("save_every")
    @classmethod
    def _cadence(cls, v: int, info: ValidationInfo) -> int:
        steps = info.data.get("max_steps")
        if steps is not None and v > steps:
            raise ValueError(f"larger than max_steps ({steps})")
        return v

    @property
    def prompts_per_step(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    @field_validator("save_steps")
    @classmethod
    def _steps(cls, v: list[int] | None, info: ValidationInfo) -> list[int] | None:
        steps = info.data.get("max_steps")
        if v is not None and (not v or any(x < 1 or (steps is not None and x > steps) for x in v) or len(set(v)) != len(v)):
            raise ValueError(f"must be distinct steps in 1..max_steps ({steps})")
        return v

    def checkpoint_steps(self) -> list[int]:
        """Steps that get a checkpoint: `save_steps` (sorted) or every `save_every`, and the last step."""
        if self.save_steps is not None:
            return sorted(set(self.save_steps) | {self.max_steps})
        steps = list(range(self.save_every, self.max_steps + 1, self.save_every))
        return steps if steps and steps[-1] == self.max_steps else steps + [self.max_steps]


class SFTArmConfig(ArmConfig):
    """Supervised fine-tuning (TRL SFTTrainer) on one fixed completion form, loss on the completion only."""

    completion_form: Literal["letter", "word", "letter_word"] = Field(
        "word", description="The one form of the gold completion SFT imitates: ' B', ' pear' or ' B ) pear'.")
    max_length: int = Field(128, ge=8, le=65536, description="Longest tokenized prompt + completion (longer rows are truncated).")


class RLArmConfig(ArmConfig):
    """GRPO (TRL GRPOTrainer) with a 0/1 correctness reward that accepts every correct completion form."""

    per_device_train_batch_size: int = Field(128, ge=1, le=65536, description="Completions per micro-batch (prompts x num_generations).")
    logging_steps: int = Field(1, ge=1, description="Steps between logged training metrics (reward mean/std, loss).")
    num_generations: int = Field(8, ge=2, le=1024, description="Completions sampled per prompt (the group).")
    generation_batch_size: int = Field(128, ge=2, description="Completions generated at once; a multiple of num_generations and of the micro-batch.")
    max_completion_length: int = Field(6, ge=1, le=65536, description="New tokens per sampled completion.")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0 = off).")
    beta: float = Field(0.0, ge=0.0, description="KL penalty to the base (0 = no reference model, as in RL's Razor).")
    entropy_coef: float = Field(0.0, ge=0.0, le=10.0, description="Entropy bonus on the sampled tokens (keeps the policy from collapsing onto one answer before it has learned the content).")
    epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="PPO-style clip range.")
    num_iterations: int = Field(1, ge=1, le=64, description="Optimisation passes per generated batch.")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"] = Field("dapo", description="GRPO loss aggregation.")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="Advantage scaling by the reward std.")
    mask_truncated_completions: bool = Field(False, description="Drop completions that hit max_completion_length from the loss.")
    n_logged_completions: int = Field(16, ge=0, le=10_000, description="Sampled completions kept for the MLflow table at step 0 and at each checkpoint step.")
    match_sft_budget: bool = Field(True, description="Require the same prompts per step, max_steps and save_every as `sft`.")

    @model_validator(mode="after")
    def _groups(self):
        g, b = self.num_generations, self.per_device_train_batch_size
        if (b * self.gradient_accumulation_steps) % g:
            raise ValueError(f"per_device_train_batch_size x gradient_accumulation_steps ({b * self.gradient_accumulation_steps}) "
                             f"must be a multiple of num_generations ({g})")
        if self.generation_batch_size % g or self.generation_batch_size % b:
            raise ValueError(f"generation_batch_size ({self.generation_batch_size}) must be a multiple of num_generations "
                             f"({g}) and of per_device_train_batch_size ({b})")
        return self

    @property
    def prompts_per_step(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps // self.num_generations
