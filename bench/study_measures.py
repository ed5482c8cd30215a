"""The study's circuit measures by hand, before the pipeline computes them: DBM masks of recorded models on one
capability (default `target`, the science task's own pairs), against the base's mask.

    python bench/study_measures.py --repo DIR [--capability target] [--at sft:400 --at rl_sft:400 ...]
                                   [--seeds 0 1 2] [--threads 1] [--delta 0.2]

DIR is a repository whose pipeline has run (`models/`, `data/prepared/probes/`). For the base and for each
`ARM:STEP` and seed, fits `dbm` (params.yaml `circuits.dbm_*` of DIR) on the scoring split of the capability and
prints `dcv.scoring.study`'s measures against the base: circuit size |C_x|, overlap |C_x ∩ C_0| / |C_0|, Jaccard,
mean mask shift over C_0; per ARM:STEP their mean over seeds with a t interval; and the heads of C_0 that the first
ARM:STEP drops below the second by more than delta (seed-mean masks). One DBM fit per model (no refit per probe-pair
draw): the intervals hold seed variance only. The pipeline computes the same measures for every checkpoint
(extract-circuits' `circuits/<model>/study/`, score-dcv's `study`); this script refits chosen models by hand, e.g.
with other `circuits.dbm_*` knobs edited in DIR's params.yaml, without rerunning the stages.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--capability", default="target")
    ap.add_argument("--at", action="append", default=None, metavar="ARM:STEP")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--delta", type=float, default=0.2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from dcv.circuits import pair_batches
    from dcv.circuits.config import CircuitsConfig
    from dcv.circuits.methods import bind
    from dcv.circuits.patching import probe_model
    from dcv.layout import Layout
    from dcv.models import load_model
    from dcv.probes import load_probes
    from dcv.scoring.study import measures, over_seeds, vulnerable_heads

    lay = Layout(a.repo.resolve())
    params = yaml.safe_load((lay.root / "params.yaml").read_text())
    cfg = CircuitsConfig.model_validate(params["circuits"])
    rows = load_probes(lay.probe_file("probes", a.capability))
    ats = [(x.split(":")[0], int(x.split(":")[1])) for x in (a.at or ["sft:400", "rl_sft:400", "rl:1200", "sft:1200"])]

    def fit(directory: Path) -> tuple[np.ndarray, float]:
        model, tok = load_model(directory, "cpu", "float32")
        batches = pair_batches(tok, rows, a.batch_size, a.capability)
        probed = probe_model(model, batches)
        t0 = time.perf_counter()
        m = bind("dbm", cfg)(model, batches, probed=probed)
        return m.values.double().numpy(), time.perf_counter() - t0

    base, secs = fit(lay.base_model)
    print(f"# study measures by DBM on `{a.capability}` ({len(rows)} scoring pairs), {lay.root}; dbm steps "
          f"{cfg.dbm_steps}, lambda {cfg.dbm_lambda}; threads {a.threads}\n")
    print(f"base: |C0| = {int((base > 0.5).sum())} of {base.size} heads ({secs:.1f} s)\n")
    print("| model | size | overlap | Jaccard | mask shift on C0 | s |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    per: dict[tuple[str, int], list] = {}
    masks: dict[tuple[str, int], list[np.ndarray]] = {}
    for arm, step in ats:
        for s in a.seeds:
            m, secs = fit(lay.checkpoint_dir(arm, s, step))
            x = measures(base, m)
            per.setdefault((arm, step), []).append(x)
            masks.setdefault((arm, step), []).append(m)
            print(f"| {arm}/seed-{s}/step-{step} | {x.size} | {x.overlap:.3f} | {x.jaccard:.3f} | {x.mask_shift_c0:+.3f} "
                  f"| {secs:.1f} |", flush=True)
    print("\n| arm:step | size | overlap [95% CI] | Jaccard [95% CI] | mask shift on C0 |\n| --- | ---: | --- | --- | ---: |")
    for (arm, step), xs in per.items():
        o, j = over_seeds([x.overlap for x in xs]), over_seeds([x.jaccard for x in xs])
        print(f"| {arm}:{step} | {np.mean([x.size for x in xs]):.1f} | {o['mean']:.3f} [{o['low']:.3f}, {o['high']:.3f}] "
              f"| {j['mean']:.3f} [{j['low']:.3f}, {j['high']:.3f}] | {np.mean([x.mask_shift_c0 for x in xs]):+.3f} |")
    if len(ats) >= 2:
        (a1, s1), (a2, s2) = ats[0], ats[1]
        v = vulnerable_heads(base, np.mean(masks[(a1, s1)], 0), np.mean(masks[(a2, s2)], 0), a.delta)
        print(f"\nvulnerable heads of C0 (seed-mean mask of {a1}:{s1} below {a2}:{s2} by more than {a.delta}): "
              f"{len(v)} of {int((base > 0.5).sum())}: {', '.join(f'L{l}H{h}' for l, h in v) or 'none'}")


if __name__ == "__main__":
    main()
