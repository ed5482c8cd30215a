"""Batches of prompts of equal token length: no padding enters the computation, so a model's output for a prompt
does not depend on which other prompts share its batch (and the last position is each row's answer position)."""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterator, Sequence


def equal_length_batches(keys: Sequence[Hashable], batch_size: int) -> Iterator[list[int]]:
    """Indices of the items, grouped by equal key (a token length, or a tuple of lengths), keys in sorted order,
    at most `batch_size` per group, original order within a group."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    for k in sorted(groups):
        idx = groups[k]
        for s in range(0, len(idx), batch_size):
            yield idx[s : s + batch_size]


def encode(tok, prompts: Sequence[str], special: bool = True) -> list[list[int]]:
    """Token ids of each prompt with the tokenizer's special tokens (a toy <bos>; none for Qwen), or without
    (`special=False`: chat renderings, which hold their own, `dcv.chat.prompt_ids`)."""
    return [tok(p, add_special_tokens=special)["input_ids"] for p in prompts]
