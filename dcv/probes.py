"""Probe pairs on any causal LM: the metric m = logit(answer) - logit(distractor) at the last real token, and
top-1 accuracy on the clean prompts. Works on toy and Hugging Face tokenizers alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dcv.batching import encode, equal_length_batches
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


def logit_difference(logits: torch.Tensor, answer: torch.Tensor, distractor: torch.Tensor) -> torch.Tensor:
    """The metric m = logit(answer) - logit(distractor) per row: logits [batch, vocab] -> [batch] float32."""
    logits = logits.float()
    return logits.gather(1, answer[:, None])[:, 0] - logits.gather(1, distractor[:, None])[:, 0]


def probe_batches(tok, rows: list[dict], field: str = "clean", max_batch: int = 256, where: str = "probes"
                  ) -> list[ProbeBatch]:
    """Prompts grouped by token length, so every batch is unpadded and the last position is the answer's."""
    enc = encode(tok, [r[field] for r in rows])
    ans = [single_token_id(tok, r["answer"], f"{where}:{i + 1}") for i, r in enumerate(rows)]
    dis = [single_token_id(tok, r["distractor"], f"{where}:{i + 1}") for i, r in enumerate(rows)]
    return [ProbeBatch(torch.tensor([enc[i] for i in part]), torch.tensor([ans[i] for i in part]),
                       torch.tensor([dis[i] for i in part]), part)
            for part in equal_length_batches([len(e) for e in enc], max_batch)]


@torch.no_grad()
def evaluate_probes(model, tok, rows: list[dict], where: str = "probes", batch_size: int = 256) -> dict[str, float]:
    """Top-1 accuracy and mean logit difference on the clean prompts."""
    device = next(model.parameters()).device
    correct, diffs, n = 0, 0.0, 0
    for b in probe_batches(tok, rows, max_batch=batch_size, where=where):
        logits = model(input_ids=b.ids.to(device), logits_to_keep=1).logits[:, -1, :].float()
        answer = b.answer.to(device)
        correct += int((logits.argmax(-1) == answer).sum())
        diffs += float(logit_difference(logits, answer, b.distractor.to(device)).sum())
        n += len(b.index)
    return {"accuracy": correct / n, "logit_diff": diffs / n}
