"""`dbm` (Differentiable Binary Masking) against `exact` on the toy base, per capability of its probe sets.

    python bench/dbm_validation.py --toy models/base [--probes data/prepared/probes] [--threads 1]
                                   [--steps 200 --lr 0.1 --lambda 0.01 --t-start 1 --t-end 0.01 --init 1]

Knobs default to CircuitsConfig's (params.yaml `circuits.dbm_*`). Printed per capability: the size k of DBM's binary
circuit (m > 0.5) of all heads, F of that circuit, F of exact's top-k heads (by |mean e_h|) at the same k, how many
heads the two share, Spearman rho of DBM's final masks and of its logits against |mean e_h| of exact, mean
-log p(answer) of the clean model and with only the binary circuit kept (the rest corrupted, DBM's own objective),
and the seconds of dbm given the cached clean and corrupted runs. F mean-ablates the heads outside the circuit, as
the circuits JSON does (dcv.circuits.faithfulness).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dcv.circuits.config import CircuitsConfig

KNOBS = {"steps": "dbm_steps", "lr": "dbm_lr", "lambda": "dbm_lambda", "t_start": "dbm_temperature_start",
         "t_end": "dbm_temperature_end", "init": "dbm_init"}


def f_at(probed, order, k: int, heads_per_forward: int, means) -> float:
    from dcv.circuits.faithfulness import faithfulness_curve

    return faithfulness_curve(probed, order, [0, k], heads_per_forward, means).f[-1] if k else 0.0


def clean_nll(probed) -> float:
    from dcv.circuits.dbm import answer_nll

    ones = torch.ones(probed.shape)
    with torch.no_grad():
        return sum(float(answer_nll(probed, r, ones)) for r in probed.runs) / probed.n_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toy", default="models/base", help="toy base model dir")
    ap.add_argument("--probes", default=None, help="dir of <capability>.jsonl (default: data/prepared/probes of the "
                    "model's repository)")
    ap.add_argument("--capability", action="append", help="only these capabilities (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    for k, f in KNOBS.items():
        ap.add_argument(f"--{k.replace('_', '-')}", dest=k, type=int if k == "steps" else float, default=None,
                        help=f"circuits.{f} (default {CircuitsConfig.model_fields[f].default})")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from dcv.circuits import pair_batches
    from dcv.circuits.faithfulness import head_means
    from dcv.circuits.methods import bind
    from dcv.circuits.patching import probe_model
    from dcv.circuits.rank import spearman
    from dcv.models import load_model
    from dcv.probes import load_probes

    toy = Path(a.toy)
    probes = Path(a.probes) if a.probes else toy.resolve().parent.parent / "data/prepared/probes"
    files = sorted(probes.glob("*.jsonl")) if not a.capability else [probes / f"{c}.jsonl" for c in a.capability]
    if not files:
        raise SystemExit(f"{probes}: no probe sets (*.jsonl)")
    cfg = CircuitsConfig.model_validate({f: getattr(a, k) for k, f in KNOBS.items() if getattr(a, k) is not None})
    model, tok = load_model(toy, "cpu", "float32")
    L, H = len(model.model.layers), model.config.num_attention_heads
    knobs = ", ".join(f"{k} {getattr(cfg, f)}" for k, f in KNOBS.items())
    print(f"{toy}: {L} layers x {H} heads = {L * H} heads; dbm: {knobs}; threads {a.threads}")
    head = (f"{'capability':<12}{'k':>4}{'F dbm':>8}{'F exact@k':>11}{'shared':>8}{'rho m':>8}{'rho logit':>11}"
            f"{'nll clean':>11}{'nll circ':>10}{'dbm s':>8}")
    print(head)
    hpf = cfg.heads_per_forward
    for f in files:
        batches = pair_batches(tok, load_probes(f), a.batch_size, str(f))
        probed = probe_model(model, batches)
        exact = bind("exact", cfg)(model, batches, probed=probed)
        t0 = time.perf_counter()
        mask = bind("dbm", cfg)(model, batches, probed=probed)
        secs = time.perf_counter() - t0
        k = len(mask.circuit)
        means = head_means(probed)
        ref = exact.order()
        shared = len(set(mask.circuit) & set(ref[:k]))
        print(f"{f.stem:<12}{k:>4}{f_at(probed, mask.circuit, k, hpf, means):>8.3f}"
              f"{f_at(probed, ref, k, hpf, means):>11.3f}{shared:>8}{spearman(mask.values, exact.mean.abs()):>8.3f}"
              f"{spearman(mask.logits, exact.mean.abs()):>11.3f}{clean_nll(probed):>11.3f}{mask.fit.nll_circuit:>10.3f}"
              f"{secs:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
