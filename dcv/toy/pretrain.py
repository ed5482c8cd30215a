"""Pretraining the toy base from scratch: a Qwen2-architecture model, a plain deterministic PyTorch loop."""

from __future__ import annotations

import math
from typing import Callable

import torch
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

    steps: int = Field(3600, ge=1, le=1_000_000, description="Optimizer steps.")
    batch_size: int = Field(64, ge=1, le=4096, description="Lines per step.")
    lr: float = Field(3.0e-3, gt=0.0, le=1.0, description="Peak AdamW learning rate.")
    warmup_steps: int = Field(100, ge=0, description="Linear warmup before the cosine decay.")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="AdamW weight decay.")
    grad_clip: float = Field(1.0, gt=0.0, description="Gradient-norm clip.")
    log_every: int = Field(50, ge=1, description="Steps between logged losses.")
    eval_every: int = Field(500, ge=1, description="Steps between capability evaluations (curves).")


def build_model(cfg: ToyModelConfig, vocab_size: int, tok, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if cfg.hidden_size % cfg.num_attention_heads or cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ValueError("hidden_size must divide by num_attention_heads, and that by num_key_value_heads")
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, use_cache=True,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def encode_corpus(lines: list[str], tok, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (with <bos> ... <eos>) and lengths of every line."""
    ids = [tok(l, add_special_tokens=True)["input_ids"] + [tok.eos_token_id] for l in lines]
    too_long = max(len(x) for x in ids)
    if too_long > max_len:
        raise ValueError(f"a corpus line has {too_long} tokens, more than max_position_embeddings={max_len}")
    width = max(len(x) for x in ids)
    out = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x)
    return out, torch.tensor([len(x) for x in ids])


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(model, ids: torch.Tensor, lengths: torch.Tensor, cfg: PretrainConfig, seed: int,
             on_log: Callable[[int, dict], None] | None = None,
             on_eval: Callable[[int], None] | None = None, progress: bool = True) -> None:
    """Train `model` in place on random batches of the encoded corpus (full next-token loss, pads masked)."""
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    model.train()
    running = 0.0
    bar = tqdm(range(cfg.steps), desc="pretrain", disable=not progress, mininterval=2.0)
    for step in bar:
        idx = torch.randint(0, ids.shape[0], (cfg.batch_size,), generator=gen)
        width = int(lengths[idx].max())
        batch = ids[idx, :width]
        mask = (torch.arange(width)[None, :] < lengths[idx][:, None]).long()
        labels = batch.masked_fill(mask == 0, -100)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = model(input_ids=batch, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        running += loss.item()
        if (step + 1) % cfg.log_every == 0:
            avg = running / cfg.log_every
            running = 0.0
            bar.set_postfix(loss=f"{avg:.3f}")
            if on_log:
                on_log(step + 1, {"train/loss": avg, "train/lr": lr_at(step, cfg)})
        if on_eval and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            model.eval()
            on_eval(step + 1)
            model.train()
    model.eval()
