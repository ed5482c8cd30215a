"""The toy base's params sections (model shape, pretraining), without torch: `stages.params` validates them in
every stage, and stages that never touch a model should not pay torch's import."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ToyModelConfig(BaseModel):
    """Shape of the toy Qwen2 model."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hidden_size: int = Field(128, ge=8, le=4096, description="Residual width.")
    intermediate_size: int = Field(256, ge=8, le=16384, description="MLP width.")
    num_hidden_layers: int = Field(4, ge=1, le=64, description="Decoder layers.")
    num_attention_heads: int = Field(8, ge=1, le=128, description="Query heads per layer.")
    num_key_value_heads: int = Field(4, ge=1, le=128, description="Key/value heads (grouped-query attention when fewer).")
    max_position_embeddings: int = Field(64, ge=16, le=8192, description="Longest sequence.")


class PretrainConfig(BaseModel):
    """Optimisation of the toy base."""

    model_config = ConfigDict(extra="forbid", strict=True)

    steps: int = Field(1800, ge=1, le=1_000_000, description="Optimizer steps.")
    batch_size: int = Field(64, ge=1, le=4096, description="Corpus lines per step (drawn with replacement).")
    pack_len: int = Field(64, ge=8, le=8192, description="Tokens per packed row: a step's lines are packed whole "
                          "into rows of this length, each line's positions restarting at 0.")
    lr: float = Field(3.0e-3, gt=0.0, le=1.0, description="Peak AdamW learning rate.")
    warmup_steps: int = Field(100, ge=0, description="Linear warmup before the cosine decay.")
    weight_decay: float = Field(0.1, ge=0.0, le=1.0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0.0, description="Gradient-norm clip.")
    log_every: int = Field(50, ge=1, description="Steps between logged losses.")
    eval_every: int = Field(500, ge=1, description="Steps between capability evaluations (curves).")
