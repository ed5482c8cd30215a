"""Arm `rl_sft`: the study's RL, continued from an SFT checkpoint (Dr.GRPO, no KL penalty).

The study (arXiv 2605.28860) adapts with SFT first and then runs RL from the SFT checkpoint; its public code had no
such path. Here it is the GRPO trainer of arm `rl` with the study's loss (`dr_grpo`, rewards not scaled by their
std, beta 0: no reference model) and a start (`init`, `init_step`: `dcv.arms.config`) on arm `sft`'s checkpoint,
seed by seed. On the toy world it starts early in SFT (step 50): from SFT's final checkpoint every sampled answer
is already right, so every group's rewards are equal and GRPO has no gradient.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dcv.arms.registry import Arm, register
from dcv.arms.rl import RLArmConfig, train_rl


class RLFromSFTConfig(RLArmConfig):
    """`rl`'s GRPO with the study's defaults, started from arm `sft`'s checkpoint `init_step`."""

    init: str = Field("sft", description="The arm whose checkpoint this arm continues (seed by seed).")
    init_step: int | None = Field(50, ge=1, description="The checkpoint step of arm `init` to start from (null: its final checkpoint).")
    match_budget_of: str | None = Field(None, description="Another arm whose prompts per step, max_steps and checkpoint steps this arm must equal (null: none).")
    max_steps: int = Field(100, ge=1, le=10_000_000, description="Optimizer steps after the start.")
    save_every: int = Field(50, ge=1, description="Steps between checkpoints (the final step is always one).")
    save_steps: list[int] | None = Field(default_factory=lambda: [25, 50, 100], validate_default=True, description="Checkpoint steps (counted from the start); the final step is always one.")
    beta: float = Field(0.0, ge=0.0, description="KL penalty (the study: 0, no reference model).")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"] = Field("dr_grpo", description="GRPO loss aggregation (the study: Dr.GRPO).")
    scale_rewards: Literal["group", "batch", "none"] = Field("none", description="Advantage scaling by the reward std (Dr.GRPO: none).")


def describe(cfg: RLFromSFTConfig) -> str:
    start = f"{cfg.init} step {cfg.init_step}" if cfg.init_step else f"{cfg.init}'s final checkpoint"
    return (f"GRPO (TRL GRPOTrainer, loss {cfg.loss_type}, beta {cfg.beta:g}) continued from {start}, "
            f"{cfg.num_generations} generations per prompt, reward 1 for any correct form")


ARM = register(Arm("rl_sft", RLFromSFTConfig, train_rl, describe, color="#9467bd"))
