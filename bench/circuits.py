"""Speed of the registered head-scoring methods (`exact`, `eap`, `eap-ig`, ...) for all heads, and their rank
agreement with the reference (exact).

    python bench/circuits.py [--toy models/base --capability ioi] [--pairs 8] [--seq 16] [--device cpu|cuda]
                             [--methods exact,eap] [--threads N] [--repeat N]

Two models: the toy base of this repository (skipped when `--toy` is not a model dir) on its probe set, and a
random-weight Qwen2 with Qwen2.5-3B's head grid (36 layers x 16 heads, 2 KV heads) at a small hidden size, on
random token pairs (corrupted = one early token changed). Each method runs from scratch (its own clean and corrupted
forwards) after one warmup, `--repeat` times; printed: the best and the median seconds, exact's best over each
method's best (as `timeit` advises: slower runs measure the machine's other load, and the small passes of the
gradient methods need a few runs to reach their steady speed), Spearman rho with exact's signed effects and with their
magnitudes (the one to read for `dbm`, whose scores are masks in [0, 1], high = needed), top-10 overlap with exact.
`dbm` runs with its CircuitsConfig knobs (`--dbm-steps` overrides its steps).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from dcv.circuits.config import CircuitsConfig
from dcv.circuits.methods import METHODS


def random_qwen(layers: int, heads: int, kv: int, hidden: int, vocab: int, device: str, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=256,
                      initializer_range=0.1, tie_word_embeddings=True)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).to(device, dtype).eval()


def random_pairs(n: int, seq: int, vocab: int, batch_size: int):
    from dcv.circuits.pairs import PairBatch

    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, vocab, (n, seq), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = (clean[:, 2] + 1) % vocab
    ans, dis = torch.randint(0, vocab, (2, n), generator=g)
    mask = torch.ones(n, seq, dtype=torch.long)
    return [PairBatch(clean[s : s + batch_size], corrupt[s : s + batch_size], mask[s : s + batch_size],
                      torch.full((min(batch_size, n - s),), seq - 1), ans[s : s + batch_size], dis[s : s + batch_size],
                      list(range(s, min(s + batch_size, n)))) for s in range(0, n, batch_size)]


def bench(name: str, model, batches, config, methods: list[str], repeat: int) -> None:
    from dcv.circuits.methods import bind, reference
    from dcv.circuits.rank import spearman, topk_overlap

    sync = torch.cuda.synchronize if next(model.parameters()).is_cuda else (lambda: None)
    bind("eap")(model, batches[:1])  # warmup
    ref = reference(config).name
    res = {}
    for method in [ref, *(m for m in methods if m != ref)]:
        bound = bind(method, config)
        times = []
        for _ in range(repeat):
            sync()
            t0 = time.perf_counter()
            e = bound(model, batches)
            sync()
            times.append(time.perf_counter() - t0)
        res[method] = (min(times), statistics.median(times), e.scores, bound.steps)
    L, H = res[ref][2].shape
    n = sum(len(b) for b in batches)
    print(f"\n{name}: {L} layers x {H} heads = {L * H} heads, {n} pairs, {next(model.parameters()).dtype}")
    print(f"  {'method':<12}{'best s':>10}{'median s':>10}{f'{ref} / it':>12}{f'rho vs {ref}':>14}"
          f"{f'rho vs |{ref}|':>16}{'top-10 overlap':>16}")
    t_ref, e_ref = res[ref][0], res[ref][2]
    for method, (t, med, scores, steps) in res.items():
        label = method + ("" if steps is None else f" ({steps})")
        print(f"  {label:<12}{t:>10.3f}{med:>10.3f}{t_ref / t:>11.1f}x{spearman(scores, e_ref):>14.3f}"
              f"{spearman(scores, e_ref.abs()):>16.3f}{topk_overlap(scores, e_ref, 10):>16.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy", default="models/base", help="toy base model dir (skipped if absent)")
    ap.add_argument("--capability", default="ioi", help="probe set of data/prepared/probes for the toy base")
    ap.add_argument("--pairs", type=int, default=8, help="random pairs for the 576-head model")
    ap.add_argument("--seq", type=int, default=16, help="tokens per random prompt")
    ap.add_argument("--hidden", type=int, default=128, help="hidden size of the 576-head model (head dim = hidden / 16)")
    ap.add_argument("--steps", type=int, default=5, help="eap-ig steps")
    ap.add_argument("--heads-per-forward", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5, help="runs per method (best and median printed)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated registered methods to time")
    ap.add_argument("--dbm-steps", type=int, default=None, help="dbm optimisation steps (default: CircuitsConfig's)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    config = CircuitsConfig.model_validate({"eap_ig_steps": a.steps, "heads_per_forward": a.heads_per_forward,
                                            **({} if a.dbm_steps is None else {"dbm_steps": a.dbm_steps})})
    methods = a.methods.split(",")
    dtype = getattr(torch, a.dtype)
    print(f"device {a.device}, threads {a.threads}, heads per forward {a.heads_per_forward}, {a.repeat} runs per method")

    toy = Path(a.toy)
    if (toy / "config.json").is_file():
        from dcv.circuits import pair_batches
        from dcv.models import load_model
        from dcv.probes import load_probes

        model, tok = load_model(toy, a.device, a.dtype)
        f = toy.parent.parent / "data/prepared/probes" / f"{a.capability}.jsonl"
        bench(f"toy base ({toy}, {a.capability})", model, pair_batches(tok, load_probes(f), 64, str(f)), config,
              methods, a.repeat)
    else:
        print(f"(no toy base at {toy}: skipped)")
    vocab = 1000
    model = random_qwen(36, 16, 2, a.hidden, vocab, a.device, dtype)
    bench(f"random Qwen2, Qwen2.5-3B head grid (hidden {a.hidden}, {a.seq} tokens)", model,
          random_pairs(a.pairs, a.seq, vocab, a.pairs), config, methods, a.repeat)


if __name__ == "__main__":
    main()
