"""Arm `rl`: GRPO (TRL GRPOTrainer) with a 0/1 correctness reward that accepts every correct completion form."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dcv.arms.config import ArmConfig
from dcv.arms.registry import Arm, TrainJob, register


class RLArmConfig(ArmConfig):
    """GRPO on the target prompts; the reward is `dcv.answers`' rule, the one evaluation uses."""

    match_budget_of: str | None = Field("sft", description="Another arm whose prompts per step, max_steps and checkpoint steps this arm must equal (null: none).")
    per_device_train_batch_size: int = Field(128, ge=1, le=65536, description="Completions per micro-batch (prompts x num_generations).")
    logging_steps: int = Field(1, ge=1, description="Steps between logged training metrics (reward mean/std, loss).")
    num_generations: int = Field(8, ge=2, le=1024, description="Completions sampled per prompt (the group).")
    generation_batch_size: int = Field(128, ge=2, description="Completions generated at once; a multiple of num_generations and of the micro-batch.")
    max_completion_length: int = Field(6, ge=1, le=65536, description="New tokens per sampled completion.")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0 = off).")
    beta: float = Field(0.5, ge=0.0, description="KL penalty to the base (0 = no reference model, as in RL's Razor and Dr.GRPO).")
    entropy_coef: float = Field(0.0, ge=0.0, le=10.0, description="Entropy bonus on the sampled tokens (0 = none).")
    epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="PPO-style clip range.")
    num_iterations: int = Field(1, ge=1, le=64, description="Optimisation passes per generated batch.")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"] = Field("dapo", description="GRPO loss aggregation (dr_grpo: Dr.GRPO's).")
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description="Advantage scaling by the reward std (Dr.GRPO: none).")
    mask_truncated_completions: bool = Field(False, description="Drop completions that hit max_completion_length from the loss.")
    n_logged_completions: int = Field(16, ge=0, le=10_000, description="Sampled completions kept for the MLflow table at step 0 and at each checkpoint step.")
    use_vllm: bool = Field(False, description="Generate with vLLM (TRL's use_vllm; CUDA and `pip install vllm`).")
    vllm_mode: Literal["colocate", "server"] = Field("colocate", description="colocate: vLLM shares the training GPUs; server: a `trl vllm-serve` process.")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0.0, lt=1.0, description="Share of each GPU's memory vLLM may take (colocate).")

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


def train_rl(job: TrainJob):
    """GRPO on the target prompts; `job.on_samples` receives up to `n_logged_completions` sampled completions (step,
    prompt, completion, reward) of each generation batch that starts at step 0 or at a checkpoint step."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from dcv.arms.data import rl_records, template_kwargs
    from dcv.arms.rewards import correctness_reward
    from dcv.arms.train import peft_config, trainer_kwargs

    datasets.disable_progress_bars()
    cfg = job.cfg
    sample_steps = set(cfg.checkpoint_steps())

    def correctness(prompts, completions, trainer_state=None, **kw):
        rewards = correctness_reward(prompts, completions, **kw)
        step = trainer_state.global_step if trainer_state is not None else 0
        if job.on_samples and cfg.n_logged_completions and (step == 0 or step in sample_steps):
            job.on_samples([{"step": step, "prompt": _text(p), "completion": _text(c), "reward": r}
                            for p, c, r in list(zip(prompts, completions, rewards))[: cfg.n_logged_completions]])
        return rewards

    args = GRPOConfig(
        **trainer_kwargs(cfg, job.device, job.seed, job.scratch),
        num_generations=cfg.num_generations, generation_batch_size=cfg.generation_batch_size,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_p=cfg.top_p,
        top_k=cfg.top_k, min_p=None, repetition_penalty=1.0, beta=cfg.beta, epsilon=cfg.epsilon,
        num_iterations=cfg.num_iterations, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
        mask_truncated_completions=cfg.mask_truncated_completions, shuffle_dataset=True, remove_unused_columns=False,
        importance_sampling_level="token", multi_objective_aggregation="sum_then_normalize", reward_weights=None,
        disable_dropout=False, log_completions=False, sync_ref_model=False,
        top_entropy_quantile=1.0, entropy_coef=cfg.entropy_coef, use_adaptive_entropy=False,
        chat_template_kwargs=template_kwargs(job.rows), use_vllm=cfg.use_vllm, vllm_mode=cfg.vllm_mode,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
    )
    trainer = GRPOTrainer(model=job.model, reward_funcs=[correctness], args=args,
                          train_dataset=datasets.Dataset.from_list(rl_records(job.rows)), processing_class=job.tok,
                          peft_config=peft_config(cfg), callbacks=[job.callback])
    job.callback.bind(trainer)
    trainer.train()
    return trainer.model


def _text(x) -> str:
    """A prompt or completion as text: conversational ones (lists of messages) as their last message's content."""
    return x if isinstance(x, str) else x[-1]["content"]


def describe(cfg: RLArmConfig) -> str:
    return (f"GRPO (TRL GRPOTrainer, loss {cfg.loss_type}), {cfg.num_generations} generations per prompt, "
            f"beta {cfg.beta:g}, reward 1 for any correct form")


ARM = register(Arm("rl", RLArmConfig, train_rl, describe, color="#1f77b4"))
