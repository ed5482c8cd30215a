"""Probe pairs as right-padded token batches: clean and corrupted prompts of a pair have the same length, so a head's
activation on one can replace it on the other position by position; the answer position is each row's last real
token, and right padding leaves every real position's computation as it is unpadded (causal attention)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dcv.batching import encode
from dcv.errors import DcvError
from dcv.probes import single_token_id


@dataclass
class PairBatch:
    """Probe pairs, right-padded to the longest in the batch."""

    clean: torch.Tensor  # [batch, pos] token ids
    corrupt: torch.Tensor  # [batch, pos]
    mask: torch.Tensor  # [batch, pos] 1 on real tokens
    last: torch.Tensor  # [batch] position of the last real token (where the answer is predicted)
    answer: torch.Tensor  # [batch]
    distractor: torch.Tensor  # [batch]
    index: list[int]  # rows of these pairs in the probe list

    def __len__(self) -> int:
        return len(self.index)

    def to(self, device) -> "PairBatch":
        t = {k: getattr(self, k).to(device) for k in ("clean", "corrupt", "mask", "last", "answer", "distractor")}
        return PairBatch(**t, index=self.index)


def pair_batches(tok, rows: list[dict], batch_size: int, where: str = "probes") -> list[PairBatch]:
    """Pairs sorted by length (least padding), `batch_size` a batch. A pair whose clean and corrupted prompts
    tokenise to different lengths is an error naming `where:<line>`."""
    clean = encode(tok, [r["clean"] for r in rows])
    corrupt = encode(tok, [r["corrupt"] for r in rows])
    for i, (a, b) in enumerate(zip(clean, corrupt)):
        if len(a) != len(b):
            raise DcvError(f"{where}:{i + 1}: clean and corrupt prompts are {len(a)} and {len(b)} tokens; "
                           "a pair must tokenise to the same length")
    answer = [single_token_id(tok, r["answer"], f"{where}:{i + 1}") for i, r in enumerate(rows)]
    distractor = [single_token_id(tok, r["distractor"], f"{where}:{i + 1}") for i, r in enumerate(rows)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    order = sorted(range(len(rows)), key=lambda i: len(clean[i]))
    out = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        width = max(len(clean[i]) for i in idx)
        ids = torch.full((2, len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for r, i in enumerate(idx):
            n = len(clean[i])
            ids[0, r, :n], ids[1, r, :n], mask[r, :n] = torch.tensor(clean[i]), torch.tensor(corrupt[i]), 1
        out.append(PairBatch(ids[0], ids[1], mask, mask.sum(1) - 1, torch.tensor([answer[i] for i in idx]),
                             torch.tensor([distractor[i] for i in idx]), idx))
    return out
