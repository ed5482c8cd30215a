"""Arm `sft`: supervised fine-tuning (TRL SFTTrainer) on one fixed completion form, loss on the completion only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dcv.arms.config import ArmConfig
from dcv.arms.registry import Arm, TrainJob, register


class SFTArmConfig(ArmConfig):
    """Supervised fine-tuning on the gold answers in one fixed form."""

    completion_form: Literal["letter", "word", "letter_word"] = Field(
        "word", description="The one form of the gold completion SFT imitates: ' B', ' pear' or ' B ) pear'.")
    max_length: int = Field(128, ge=8, le=65536, description="Longest tokenized prompt + completion (longer rows are truncated).")


def sft_trainer(job: TrainJob, trainer_cls=None):
    """The SFTTrainer of one seed (`trainer_cls`: a subclass, e.g. the protected arm's)."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from dcv.arms.data import sft_records
    from dcv.arms.train import peft_config, trainer_kwargs

    datasets.disable_progress_bars()
    cfg = job.cfg
    args = SFTConfig(**trainer_kwargs(cfg, job.device, job.seed, job.scratch), completion_only_loss=True,
                     max_length=cfg.max_length, packing=False, padding_free=False, shuffle_dataset=False,
                     dataset_num_proc=None, loss_type="nll", assistant_only_loss=False)
    data = datasets.Dataset.from_list(sft_records(job.rows, cfg.completion_form))
    trainer = (trainer_cls or SFTTrainer)(model=job.model, args=args, train_dataset=data, processing_class=job.tok,
                                          peft_config=peft_config(cfg), callbacks=[job.callback])
    job.callback.bind(trainer)
    return trainer


def train_sft(job: TrainJob):
    trainer = sft_trainer(job)
    trainer.train()
    return trainer.model


def describe(cfg: SFTArmConfig) -> str:
    return f"SFT (TRL SFTTrainer) on the `{cfg.completion_form}` completion form, loss on the completion only"


ARM = register(Arm("sft", SFTArmConfig, train_sft, describe, color="#d62728"))
