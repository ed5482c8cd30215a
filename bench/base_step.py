"""What one pretraining step of the toy base costs, by part, for the base's shape or a smaller one.

    python bench/base_step.py [--repo DIR] [--steps 60] [--threads 2] [--set hidden_size=96 ...] [--profile]

Reads `params.yaml` (base.model, base.train) and the prepared corpus and tokenizer of `--repo` (a repository where
stage prepare-data has run, e.g. a `bench/pipeline.py --keep` clone), builds the model as stage base does (its own
seed, random weights: the cost does not depend on them) and times `--steps` steps after 10 warm-up steps: packing
the lines, forward, backward, gradient clipping, AdamW. `--set KEY=VALUE` changes a `base.model` key (a narrower or
shallower model), `--threads` the torch threads; `--profile` adds the top operators of 20 forward+backward passes
(torch.profiler, self CPU time). Prints one line of milliseconds per step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=REPO)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a base.model key")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from dcv.toy.model_config import ToyModelConfig
    from dcv.toy.pretrain import build_model, encode_corpus, pack_lines, packed_loss
    from dcv.toy.tokenizer import load_tokenizer

    torch.set_num_threads(a.threads)
    p = yaml.safe_load((a.repo / "params.yaml").read_text())["base"]
    for kv in a.set:
        k, _, v = kv.partition("=")
        if k not in p["model"]:
            raise SystemExit(f"--set {kv}: base.model has no key {k!r}")
        p["model"][k] = yaml.safe_load(v)
    prepared = a.repo / "data" / "prepared"
    if not (prepared / "corpus" / "train.txt").is_file():
        raise SystemExit(f"{prepared / 'corpus' / 'train.txt'}: not found (run stage prepare-data in {a.repo})")
    tok = load_tokenizer(prepared / "tokenizer")
    lines = (prepared / "corpus" / "train.txt").read_text().splitlines()
    ids, lengths = encode_corpus(lines, tok, p["model"]["max_position_embeddings"])
    model = build_model(ToyModelConfig(**p["model"]), len(tok), tok, p["seed"])
    train = p["train"]
    opt = torch.optim.AdamW(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    gen = torch.Generator().manual_seed(0)
    model.train()

    def batch():
        idx = torch.randint(0, ids.shape[0], (train["batch_size"],), generator=gen)
        return pack_lines(ids, lengths, idx, train["pack_len"], model.config.pad_token_id)

    parts = dict.fromkeys(("pack", "forward", "backward", "clip", "adamw"), 0.0)
    rows = 0
    for i in range(a.steps + 10):
        t = [time.perf_counter()]
        b = batch()
        t.append(time.perf_counter())
        loss = packed_loss(model, b)
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), train["grad_clip"])
        t.append(time.perf_counter())
        opt.step()
        loss.item()
        t.append(time.perf_counter())
        if i >= 10:
            for k, t0, t1 in zip(parts, t, t[1:]):
                parts[k] += t1 - t0
            rows += b.input_ids.shape[0]
    ms = {k: 1000 * v / a.steps for k, v in parts.items()}
    n_params = sum(x.numel() for x in model.parameters())
    print(f"model {p['model']} ({n_params} parameters), {a.threads} threads, {rows / a.steps:.1f} rows of "
          f"{train['pack_len']} a step: {sum(ms.values()):.1f} ms a step ("
          + ", ".join(f"{k} {v:.1f}" for k, v in ms.items()) + ")")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        batches = [batch() for _ in range(20)]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in batches:
                packed_loss(model, b).backward()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
