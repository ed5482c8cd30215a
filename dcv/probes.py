"""Probe pairs on any causal LM: the metric m = logit(answer) - logit(distractor) at the last real token, and
top-1 accuracy on the clean prompts. Works on toy and Hugging Face tokenizers alike."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from dcv.errors import DcvError
from dcv.io import read_jsonl

PROBE_KEYS = ("clean", "corrupt", "answer", "distractor")


def load_probes(path: Path) -> list[dict]:
    """Probe pairs of a JSONL file; a row missing a key is an error naming file and line."""
    rows = read_jsonl(path)
    for i, r in enumerate(rows, 1):
        for k in PROBE_KEYS:
            if not isinstance(r.get(k), str) or (k in ("clean", "answer", "distractor") and not r[k].strip()):
                raise DcvError(f"{path}:{i}: probe row needs a non-empty string '{k}'")
    if not rows:
        raise DcvError(f"{path}: no probe pairs")
    return rows


def single_token_id(tok, text: str, where: str) -> int:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise DcvError(f"{where}: answer {text!r} is {len(ids)} tokens for this tokenizer, must be exactly 1")
    if tok.unk_token_id is not None and ids[0] == tok.unk_token_id:
        raise DcvError(f"{where}: answer {text!r} is not in the tokenizer's vocabulary")
    return ids[0]


@dataclass
class ProbeBatch:
    """Token ids of prompts grouped by length (no padding), with answer and distractor ids."""

    ids: torch.Tensor  # [batch, pos]
    answer: torch.Tensor  # [batch]
    distractor: torch.Tensor  # [batch]
    index: list[int]  # positions of these rows in the probe list


def encode_prompts(tok, prompts: list[str]) -> list[list[int]]:
    return [tok(p, add_special_tokens=True)["input_ids"] for p in prompts]


def probe_batches(tok, rows: list[dict], field: str = "clean", max_batch: int = 256, where: str = "probes"
                  ) -> list[ProbeBatch]:
    """Group prompts of equal token length, so every batch is unpadded and the last position is the answer's."""
    enc = encode_prompts(tok, [r[field] for r in rows])
    ans = [single_token_id(tok, r["answer"], f"{where}:{i + 1}") for i, r in enumerate(rows)]
    dis = [single_token_id(tok, r["distractor"], f"{where}:{i + 1}") for i, r in enumerate(rows)]
    groups: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(enc):
        groups[len(e)].append(i)
    out = []
    for length in sorted(groups):
        idx = groups[length]
        for s in range(0, len(idx), max_batch):
            part = idx[s : s + max_batch]
            out.append(ProbeBatch(torch.tensor([enc[i] for i in part]), torch.tensor([ans[i] for i in part]),
                                  torch.tensor([dis[i] for i in part]), part))
    return out


@torch.no_grad()
def evaluate_probes(model, tok, rows: list[dict], where: str = "probes") -> dict[str, float]:
    """Top-1 accuracy and mean logit difference on the clean prompts."""
    device = next(model.parameters()).device
    correct, diffs, n = 0, 0.0, 0
    for b in probe_batches(tok, rows, where=where):
        logits = model(input_ids=b.ids.to(device)).logits[:, -1, :].float()
        a = logits.gather(1, b.answer.to(device)[:, None])[:, 0]
        d = logits.gather(1, b.distractor.to(device)[:, None])[:, 0]
        correct += int((logits.argmax(-1) == b.answer.to(device)).sum())
        diffs += float((a - d).sum())
        n += len(b.index)
    return {"accuracy": correct / n, "logit_diff": diffs / n}
