"""What every arm's trainer shares: TrainingArguments fields, device flags, LoRA, checkpoint saving and the
callback that hands checkpoints and training logs to the caller.

The Trainer's own output_dir is a scratch directory the caller owns (outside any DVC out): Trainer checkpoints,
`trainer_state.json` and `training_args.bin` hold timings and paths and must never reach the outs (DVC reruns
downstream whenever an out's bytes change). Checkpoints are written by `save_checkpoint` with
`dcv.models.save_model` (weights, config, tokenizer, marker: deterministic bytes).
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Callable

import torch
from transformers import TrainerCallback

from dcv.arms.config import ArmConfig
from dcv.errors import DcvError

LogFn = Callable[[int, dict], None]
LORA_SHARDED = "finetune: lora with sharded parameters (ZeRO-3/FSDP) is not supported: use ddp or zero2"

# TRL 1.16 calls a transformers 5 property that warns on every training start; nothing for a user to act on.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def device_flags(cfg: ArmConfig, device: torch.device) -> dict:
    """Precision, checkpointing and placement derived from the device: fp32 and no checkpointing on CPU."""
    cuda = device.type == "cuda"
    bf16 = (cuda and torch.cuda.is_bf16_supported()) if cfg.bf16 == "auto" else cfg.bf16
    gc = cuda if cfg.gradient_checkpointing == "auto" else cfg.gradient_checkpointing
    # transformers 5.24 renamed gradient_checkpointing to activation_checkpointing; TRL still defaults the old name
    # to True, which is mirrored into the new one unless the new one is set.
    return {"bf16": bool(bf16), "fp16": False, "activation_checkpointing": bool(gc), "use_cpu": not cuda,
            "dataloader_pin_memory": cuda}


def trainer_kwargs(cfg: ArmConfig, device: torch.device, seed: int, scratch: Path) -> dict:
    """The TrainingArguments fields both arms set explicitly."""
    return {
        "output_dir": str(scratch), "max_steps": cfg.max_steps, "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler_type, "warmup_steps": cfg.warmup_steps,
        "weight_decay": cfg.weight_decay, "max_grad_norm": cfg.max_grad_norm, "optim": "adamw_torch",
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "logging_strategy": "steps", "logging_steps": cfg.logging_steps, "logging_first_step": False,
        "save_strategy": "no", "eval_strategy": "no", "report_to": "none", "seed": seed, "data_seed": seed,
        "dataloader_num_workers": 0, "disable_tqdm": True, **device_flags(cfg, device),
    }


def peft_config(cfg: ArmConfig):
    if cfg.finetune != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")


def save_checkpoint(model, tok, directory: Path, marker: dict, state_dict: dict | None = None) -> None:
    """Save a full model directory; a LoRA model is saved with its adapter merged into a copy of the weights.
    `state_dict`: the gathered full weights when the model's own are sharded (ZeRO-3, FSDP)."""
    from dcv.models import save_model

    if hasattr(model, "merge_and_unload"):  # peft.PeftModel
        if state_dict is not None:
            raise DcvError(LORA_SHARDED)
        model = copy.deepcopy(model).merge_and_unload()
    # Trainers switch the KV cache off for training; the saved config keeps the base's inference setting.
    cfg = model.config
    prev, cfg.use_cache = cfg.use_cache, True
    try:
        save_model(model, tok, directory, marker, state_dict)
    finally:
        cfg.use_cache = prev


PROGRESS_KEYS = ("loss", "reward", "reward_std", "protect_penalty")


class CheckpointCallback(TrainerCallback):
    """At each checkpoint step, hand the model to `on_checkpoint(step, model, state_dict)` on the main process.

    The output is one progress bar per training (`label`), with the last loss / reward in its postfix, on the main
    process: `bind` removes the Trainer's own printers (a dict of metrics per logging step); the metrics belong in
    MLflow, where `on_log` sends them.

    Under a distributed launch whose parameters are sharded (ZeRO-3, FSDP) every rank first takes part in gathering
    the full `state_dict` (else it is None); the other ranks wait until the main process has saved. Training
    metrics the Trainer logs (loss, reward, reward_std, ...) go to `on_log` with their step.
    """

    def __init__(self, steps: list[int], on_checkpoint: Callable[[int, object, dict | None], None],
                 on_log: LogFn | None = None, label: str = "train"):
        self.steps = set(steps)
        self.on_checkpoint = on_checkpoint
        self.on_log_fn = on_log
        self.label = label
        self.trainer = None
        self.bar = None

    def bind(self, trainer) -> None:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        self.trainer = trainer
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)

    def on_train_begin(self, args, state, control, **kwargs):
        # Every rank refuses before the first step (a refusal at the first save, on the main process only, left the
        # other ranks waiting in a collective): a launch by hand can bypass the params check of common.launch.
        if self._sharded() and self.trainer is not None and hasattr(self.trainer.model, "merge_and_unload"):
            raise DcvError(LORA_SHARDED)
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, desc=self.label, unit="step", mininterval=2.0, dynamic_ncols=True)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        return control

    def _sharded(self) -> bool:
        acc = self.trainer.accelerator if self.trainer is not None else None
        if acc is None or acc.num_processes == 1:
            return False
        ds = getattr(acc.state, "deepspeed_plugin", None)
        return (ds is not None and ds.zero_stage == 3) or acc.distributed_type.name == "FSDP"

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
        if state.global_step in self.steps:
            acc = self.trainer.accelerator if self.trainer is not None else None
            state_dict = acc.get_state_dict(self.trainer.model_wrapped) if self._sharded() else None
            if acc is None or acc.is_main_process:
                was_training = model.training
                model.eval()
                self.on_checkpoint(state.global_step, model, state_dict)
                model.train(was_training)
            if acc is not None:
                acc.wait_for_everyone()
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            flat = {k: float(v) for k, v in logs.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
            flat = {k: v for k, v in flat.items() if not k.startswith("train_")}  # end-of-training timings
            if self.bar is not None:
                shown = {k: f"{flat[k]:.3g}" for k in PROGRESS_KEYS if k in flat}
                if shown:
                    self.bar.set_postfix(shown, refresh=False)
            if flat and self.on_log_fn:
                self.on_log_fn(state.global_step, flat)
        return control
