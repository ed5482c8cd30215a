"""Pretraining the toy base from scratch: a Qwen2-architecture model, a plain deterministic PyTorch loop."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from dcv.toy.model_config import PretrainConfig, ToyModelConfig  # noqa: F401  (re-exported)


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
    """Right-padded ids [n_lines, longest] (each line <bos> ... <eos>) and the length of every line [n_lines]."""
    ids = [tok(l, add_special_tokens=True)["input_ids"] + [tok.eos_token_id] for l in lines]
    too_long = max(len(x) for x in ids)
    if too_long > max_len:
        raise ValueError(f"a corpus line has {too_long} tokens, more than max_position_embeddings={max_len}")
    width = max(len(x) for x in ids)
    out = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x)
    return out, torch.tensor([len(x) for x in ids])


@dataclass
class PackedBatch:
    """Whole lines packed side by side into rows; each line's positions restart at 0.

    With `position_ids` and no attention mask (and no cache), transformers' mask builder reads every restart as the
    start of a new sequence and makes the causal mask block-diagonal, so a line never attends to its neighbours: its
    logits equal those of the line run alone (tests/test_pretrain.py). Padding at a row's end has position 0 each, so
    every pad is a sequence of its own; pads and each line's first token (<bos>) carry no label.
    """

    input_ids: torch.Tensor  # [rows, pack_len]
    position_ids: torch.Tensor  # [rows, pack_len]
    labels: torch.Tensor  # [rows, pack_len]; -100 where no loss


def pack_lines(ids: torch.Tensor, lengths: torch.Tensor, idx: torch.Tensor, pack_len: int, pad_id: int
               ) -> PackedBatch:
    """Pack the lines `idx` (rows of `ids`, true lengths `lengths`) into as few rows of `pack_len` tokens as
    first-fit decreasing finds; deterministic (ties keep the order of `idx`)."""
    lens = lengths[idx].tolist()
    if max(lens) > pack_len:
        raise ValueError(f"a line of {max(lens)} tokens does not fit pack_len={pack_len}")
    order = sorted(range(len(lens)), key=lambda i: -lens[i])  # stable: equal lengths keep their draw order
    rows: list[list[int]] = []  # line slots (indices into idx) per row
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lens[i] <= free:
                rows[r].append(i)
                room[r] -= lens[i]
                break
        else:
            rows.append([i])
            room.append(pack_len - lens[i])
    input_ids = torch.full((len(rows), pack_len), pad_id, dtype=torch.long)  # [rows, pack_len]
    position_ids = torch.zeros((len(rows), pack_len), dtype=torch.long)  # [rows, pack_len]
    labels = torch.full((len(rows), pack_len), -100, dtype=torch.long)  # [rows, pack_len]
    for r, slots in enumerate(rows):
        at = 0
        for i in slots:
            n = lens[i]
            line = ids[int(idx[i]), :n]
            input_ids[r, at : at + n] = line
            position_ids[r, at : at + n] = torch.arange(n)
            labels[r, at + 1 : at + n] = line[1:]  # <bos> is never a target: it follows the previous line
            at += n
    return PackedBatch(input_ids, position_ids, labels)


def packed_loss(model, batch: PackedBatch) -> torch.Tensor:
    """Mean next-token loss over the labelled tokens of a packed batch.

    `use_cache=False` matters: with a cache, transformers skips its packed-sequence detection and the lines of a row
    would attend to each other.
    """
    return model(input_ids=batch.input_ids, position_ids=batch.position_ids, labels=batch.labels,
                 use_cache=False).loss


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(model, ids: torch.Tensor, lengths: torch.Tensor, cfg: PretrainConfig, seed: int,
             on_log: Callable[[int, dict], None] | None = None,
             on_eval: Callable[[int], None] | None = None, progress: bool = True) -> None:
    """Train `model` in place on random draws of corpus lines, packed (`pack_lines`); next-token loss on every real
    token but each line's <bos>."""
    from tqdm import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    pad_id = model.config.pad_token_id
    model.train()
    running = 0.0
    bar = tqdm(range(cfg.steps), desc="pretrain", disable=not progress, mininterval=2.0)
    for step in bar:
        idx = torch.randint(0, ids.shape[0], (cfg.batch_size,), generator=gen)
        batch = pack_lines(ids, lengths, idx, cfg.pack_len, pad_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = packed_loss(model, batch)
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
