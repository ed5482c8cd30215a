"""Speed of the toy base's pretraining step (the `base` stage's inner loop), packed and, for comparison, padded.

    python bench/pretrain.py [--params params.yaml] [--steps 50] [--threads 2] [--mode both|packed|padded]

Builds the world and model of params.yaml in memory (nothing written) and times optimizer steps after a warmup.
`packed` is the stage's loop (`dcv.toy.pretrain.pretrain`: a step's lines packed whole into rows of `pack_len`);
`padded` is the loop before packing (each line one row, right-padded to the longest line of the step). Both draw
the same lines. Useful tokens are the lines' real (non-pad) tokens.
"""

from __future__ import annotations

import argparse
import time

import torch


def padded_steps(model, ids, lengths, cfg, seed: int) -> None:
    """The pre-packing loop: one row per line, padded to the step's longest line, attention mask on the pads."""
    from dcv.toy.pretrain import lr_at

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(0, ids.shape[0], (cfg.batch_size,), generator=gen)
        width = int(lengths[idx].max())
        batch = ids[idx, :width]  # [lines, width]
        mask = (torch.arange(width)[None, :] < lengths[idx][:, None]).long()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = model(input_ids=batch, attention_mask=mask, labels=batch.masked_fill(mask == 0, -100)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()


def slots(ids, lengths, cfg, seed: int) -> tuple[float, float, float]:
    """Mean per step of the same draws as the loops: useful tokens, padded-loop token slots, packed token slots."""
    from dcv.toy.pretrain import pack_lines

    gen = torch.Generator().manual_seed(seed)
    useful = padded = packed = 0
    for _ in range(cfg.steps):
        idx = torch.randint(0, ids.shape[0], (cfg.batch_size,), generator=gen)
        useful += int(lengths[idx].sum())
        padded += cfg.batch_size * int(lengths[idx].max())
        packed += pack_lines(ids, lengths, idx, cfg.pack_len, 0).input_ids.numel()
    return useful / cfg.steps, padded / cfg.steps, packed / cfg.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["both", "packed", "padded"], default="both")
    a = ap.parse_args()

    from dcv.toy.corpus import build_corpus, capabilities
    from dcv.toy.pretrain import build_model, encode_corpus, pretrain
    from dcv.toy.tokenizer import build_tokenizer
    from dcv.toy.world import World
    from stages.params import load_params

    torch.set_num_threads(a.threads)
    p = load_params(a.params)
    world = World.build(p.data.world)
    tok = build_tokenizer(set().union(*(c.words() for c in capabilities(world).values())))
    t0 = time.perf_counter()
    lines = build_corpus(world, p.data.corpus)
    ids, lengths = encode_corpus(lines, tok, p.base.model.max_position_embeddings)
    t_data = time.perf_counter() - t0
    cfg = p.base.train.model_copy(update={"steps": a.steps})
    useful, padded_slots, packed_slots = slots(ids, lengths, cfg, 1)
    loops = {"packed": lambda m, c, s: pretrain(m, ids, lengths, c, s, progress=False),
             "padded": lambda m, c, s: padded_steps(m, ids, lengths, c, s)}
    n_params = sum(x.numel() for x in build_model(p.base.model, len(tok), tok, 0).parameters())
    print(f"corpus+encode     {t_data:8.2f} s   ({len(lines)} lines, {float(lengths.float().mean()):.1f} tokens each)")
    print(f"params            {n_params:8d}")
    print(f"per step          {cfg.batch_size} lines, {useful:.0f} useful tokens; token slots: padded {padded_slots:.0f}"
          f", packed {packed_slots:.0f} (rows of {cfg.pack_len}); threads {a.threads}")
    for mode in (["padded", "packed"] if a.mode == "both" else [a.mode]):
        model = build_model(p.base.model, len(tok), tok, p.base.seed)
        loops[mode](model, p.base.train.model_copy(update={"steps": 5}), 0)  # warmup
        t0 = time.perf_counter()
        loops[mode](model, cfg, 1)
        dt = (time.perf_counter() - t0) / a.steps
        print(f"{mode:8s}  step {dt * 1000:7.1f} ms   {useful / dt:8.0f} useful tokens/s   "
              f"projected train {dt * p.base.train.steps:7.1f} s ({p.base.train.steps} steps, evals not included)")


if __name__ == "__main__":
    main()
