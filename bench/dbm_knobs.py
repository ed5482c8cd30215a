"""Do cheaper DBM knobs find the same circuits? The study's DBM mask of recorded models under several (steps, lr).

    python bench/dbm_knobs.py [--repo .] [--capability target] [--settings 100x0.2 60x0.35 50x0.4] [--threads 1]
                              [--steps 25 400]

For the base and each recorded checkpoint of `models/<arm>/seed-<s>/` in `--repo` (by default at the first and last
of `--steps`), the capability's scoring pairs (`data/prepared/probes/<capability>.jsonl`) are run once, and
`dcv.circuits.extract.study_mask` fits the mask with every setting on those same cached runs (other knobs: the
repo's params.yaml). The first setting is the reference. Prints per model the reference circuit's size and F, and
per other setting its size, the Jaccard index of its head set with the reference's, and its F; then per setting the
mean and smallest Jaccard and how many circuits are identical. Costs steps x (one forward and backward) per model
and setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--capability", default="target")
    ap.add_argument("--settings", nargs="+", default=["100x0.2", "60x0.35", "50x0.4"], help="STEPSxLR, reference first")
    ap.add_argument("--steps", nargs="+", type=int, default=[25, 400], help="checkpoint steps to compare")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    repo = a.repo.resolve()
    sys.path.insert(0, str(repo))
    import torch

    from dcv.circuits.extract import study_mask
    from dcv.circuits.methods import bind
    from dcv.circuits.patching import probe_model
    from dcv.models import load_model
    from stages.extract_circuits import encode, load_capabilities
    from stages.params import load_params

    torch.set_num_threads(a.threads)
    p = load_params(repo / "params.yaml").circuits
    cap = a.capability
    rows = load_capabilities(repo / "data/prepared/probes", [cap])
    settings = [(s, int(s.split("x")[0]), float(s.split("x")[1])) for s in a.settings]
    models = [repo / "models/base"] + sorted(d for d in (repo / "models").glob("*/seed-*/checkpoints/step-*")
                                             if int(d.name.removeprefix("step-")) in a.steps)
    jac: dict[str, list[float]] = {s: [] for s, _, _ in settings[1:]}
    print(f"# DBM knobs on {cap}: {len(models)} models, reference {settings[0][0]}; threads {a.threads}")
    for d in models:
        model, tok = load_model(d, "cpu", "auto")
        probed = probe_model(model, encode(tok, rows, p.batch_size, {cap: cap})[cap])
        fits = {s: study_mask(probed, bind("dbm", p.model_copy(update={"dbm_steps": n, "dbm_lr": lr})),
                              p.heads_per_forward) for s, n, lr in settings}
        ref = {tuple(h) for h in fits[settings[0][0]]["circuit"]}
        line = [f"{d.relative_to(repo)}", f"{settings[0][0]}: size {len(ref)} F {fits[settings[0][0]]['f']:.3f}"]
        for s, _, _ in settings[1:]:
            c = {tuple(h) for h in fits[s]["circuit"]}
            j = len(c & ref) / max(1, len(c | ref))
            jac[s].append(j)
            line.append(f"{s}: size {len(c)} Jaccard {j:.2f} F {fits[s]['f']:.3f}")
        print(" | ".join(line), flush=True)
    for s, js in jac.items():
        print(f"{s}: mean Jaccard {sum(js) / len(js):.3f}, smallest {min(js):.2f}, identical {sum(j == 1 for j in js)} "
              f"of {len(js)}")


if __name__ == "__main__":
    main()
