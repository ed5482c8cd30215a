"""Speed of the toy base's pretraining step (the `base` stage's inner loop), printed as figures.

    python bench/pretrain.py [--params params.yaml] [--steps 50] [--threads 2]

Builds the world and model of params.yaml in memory (nothing written) and times optimizer steps after a warmup.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
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
    model = build_model(p.base.model, len(tok), tok, p.base.seed)
    cfg = p.base.train.model_copy(update={"steps": 5})
    pretrain(model, ids, lengths, cfg, 0, progress=False)  # warmup
    cfg = p.base.train.model_copy(update={"steps": a.steps})
    t0 = time.perf_counter()
    pretrain(model, ids, lengths, cfg, 0, progress=False)
    dt = (time.perf_counter() - t0) / a.steps
    n_params = sum(x.numel() for x in model.parameters())
    tokens = cfg.batch_size * float(lengths.float().mean())
    print(f"corpus+encode     {t_data:8.2f} s   ({len(lines)} lines)")
    print(f"params            {n_params:8d}")
    print(f"step              {dt * 1000:8.1f} ms  (batch {cfg.batch_size}, threads {a.threads})")
    print(f"throughput        {tokens / dt:8.0f} tokens/s")
    print(f"projected train   {dt * p.base.train.steps:8.1f} s   ({p.base.train.steps} steps, evals not included)")


if __name__ == "__main__":
    main()
