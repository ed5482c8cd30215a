"""Stage `evaluate-forgetting`: prior capabilities, target accuracy and forward KL of the base and every checkpoint.

    dcv stage evaluate-forgetting [--params params.yaml]

For the base and every checkpoint of every arm and seed (`models/<arm>/seed-<s>/checkpoints/step-<n>/`): accuracy
and logit difference on each capability's held-out probes (`data/prepared/probes/`), target eval accuracy and the
forward KL on the target eval prompts (`data/prepared/target/eval.jsonl`). Writes `metrics/evaluate-forgetting.json`
(per arm: forgetting at the final step, overall and per capability, adaptation steps, the curve over steps with
its spread over seeds, every seed's checkpoints) and `plots/forgetting/`: `curve-<arm>.csv` (means over seeds, for
`dvc plots`) and `checkpoints.csv` (every model, every measure). With `forgetting.lm_eval.enabled` it also runs
local lm-evaluation-harness tasks on the base and the final (or every) checkpoint (`lm_eval` block).
"""

from __future__ import annotations

import time
from pathlib import Path

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, seed_everything, stage

SECTIONS = ["forgetting", "common.seeds", "common.device", "common.torch_threads", "common.experiment"]
DATA = "data/prepared"
BASE = "models/base"
OUT_METRICS = "metrics/evaluate-forgetting.json"
OUT_PLOTS = "plots/forgetting"
CURVE_KEYS = ("target_accuracy", "prior_accuracy", "forgetting", "forward_kl")


def load_inputs(root: Path, seeds: list[int]) -> tuple[list[dict], dict[str, list[dict]], dict]:
    """Target eval rows, probe sets and arm -> seed -> step -> checkpoint dir, checked before the MLflow run opens."""
    from dcv.arms import ARMS, checkpoint_dirs
    from dcv.arms.data import load_target
    from dcv.probes import load_probes

    eval_rows = load_target(root / DATA / "target" / "eval.jsonl")
    probes = {f.stem: load_probes(f) for f in sorted((root / DATA / "probes").glob("*.jsonl"))}
    if not probes:
        raise DcvError(f"{root / DATA / 'probes'}: no probe sets (*.jsonl)")
    if not (root / BASE / "config.json").is_file():
        raise DcvError(f"{root / BASE}: not a model directory (run stage base first)")
    ckpts = {}
    for arm in ARMS:
        ckpts[arm] = {}
        for s in seeds:
            ckpts[arm][s] = checkpoint_dirs(root / "models" / arm, s)
            if not ckpts[arm][s]:
                raise DcvError(f"{root / 'models' / arm / f'seed-{s}'}: no checkpoints (common.seeds lists seed {s}; "
                               f"run stage {arm})")
    return eval_rows, probes, ckpts


def _checkpoint_rows(metrics: dict) -> list[dict]:
    caps = sorted(metrics["base"]["capabilities"])
    out = []

    def row(arm, seed, r):
        d = {"arm": arm, "seed": seed, "step": r["step"], **{k: r[k] for k in CURVE_KEYS}}
        for c in caps:
            d[f"accuracy.{c}"] = r["capabilities"][c]["accuracy"]
            d[f"logit_diff.{c}"] = r["capabilities"][c]["logit_diff"]
        return d

    out.append(row("base", None, {"step": 0, **metrics["base"]}))
    for arm, a in metrics["arms"].items():
        for s, v in a["seeds"].items():
            out += [row(arm, int(s), r) for r in v["checkpoints"][1:]]
    return out


def run_lm_eval(ctx: StageContext, ckpts: dict) -> dict:
    """lm-evaluation-harness tasks on the base and each arm's final (or every) checkpoint; forgetting per task."""
    import statistics

    from dcv.arms import final_dir
    from dcv.lm_eval_bridge import evaluate
    from dcv.models import load_model, resolve_device

    cfg = ctx.params.forgetting.lm_eval
    device = str(resolve_device(ctx.params.common.device))
    include = Path(cfg.include_path)
    include = include if include.is_absolute() else ctx.root / include
    models = {"base": ctx.path(BASE)}
    for arm, seeds in ckpts.items():
        for s, steps in seeds.items():
            if cfg.models == "all":
                models.update({f"{arm}/seed-{s}/step-{st}": d for st, d in steps.items()})
            else:
                models[f"{arm}/seed-{s}/final"] = final_dir(ctx.path(f"models/{arm}"), s)
    results = {}
    for name, d in models.items():
        model, tok = load_model(d, device, "float32")
        results[name] = evaluate(model, tok, include, cfg.tasks, cfg.limit, cfg.batch_size, ctx.params.common.seeds[0])
        del model
    drop = {}
    for arm, seeds in ckpts.items():
        finals = [f"{arm}/seed-{s}/final" if cfg.models == "final" else f"{arm}/seed-{s}/step-{max(st)}"
                  for s, st in seeds.items()]
        drop[arm] = {t: {m: statistics.fmean(results["base"][t][m] - results[f][t][m] for f in finals)
                         for m in results["base"][t]} for t in results["base"]}
    return {"tasks": list(cfg.tasks), "limit": cfg.limit, "models": results, "forgetting": drop}


def run(ctx: StageContext, inputs: tuple) -> dict:
    from dcv.arms import ARMS
    from dcv.forgetting import ForgettingEvaluator, summarize
    from dcv.models import load_model, resolve_device

    t0 = time.perf_counter()
    cfg, common = ctx.params.forgetting, ctx.params.common
    eval_rows, probes, ckpts = inputs
    seed_everything(common.seeds[0], common.torch_threads)
    device = str(resolve_device(common.device))
    base_model, tok = load_model(ctx.path(BASE), device, "float32")
    evaluator = ForgettingEvaluator(base_model, tok, eval_rows, probes, cfg.eval, f"{DATA}/probes")
    base = evaluator(base_model)
    del base_model
    runs = {}
    for arm in ARMS:
        runs[arm] = {}
        for s, steps in ckpts[arm].items():
            runs[arm][s] = {}
            for step, d in steps.items():
                model, _ = load_model(d, device, "float32")
                runs[arm][s][step] = evaluator(model)
                del model
    metrics = summarize(base, runs, cfg.adaptation_fraction)
    if cfg.lm_eval.enabled:
        metrics["lm_eval"] = run_lm_eval(ctx, ckpts)

    with io.atomic_dir(ctx.path(OUT_PLOTS)) as d:
        for arm, a in metrics["arms"].items():
            cols = ["step"] + [k + sfx for k in CURVE_KEYS for sfx in ("", "_min", "_max")]
            io.write_csv(d / f"curve-{arm}.csv", cols, a["curve"])
        rows = _checkpoint_rows(metrics)
        io.write_csv(d / "checkpoints.csv", list(rows[0]), rows)
    metrics = io.json_safe(metrics)  # NaN -> None before the curves go to MLflow too
    for arm, a in metrics["arms"].items():
        for p in a["curve"]:
            ctx.run.log_step(p["step"], {f"{arm}/{k}": p[k] for k in CURVE_KEYS})
    return ctx.finish(metrics, t0, OUT_METRICS, [(OUT_PLOTS, "plots")], final=lambda m: (
        {k: v for k, v in m.items() if k != "arms"}
        | {"arms": {arm: {k: v for k, v in a.items() if k not in ("curve", "seeds")} for arm, a in m["arms"].items()}}))


def main(params: str) -> None:
    """Bad params, then bad inputs, stop the stage before anything is written (not even the MLflow run)."""
    from stages.params import load_params

    p = load_params(params)
    inputs = load_inputs(Path(params).resolve().parent, list(p.common.seeds))
    if p.forgetting.lm_eval.enabled:
        from dcv.lm_eval_bridge import require

        inc = Path(p.forgetting.lm_eval.include_path)
        if not (inc if inc.is_absolute() else Path(params).resolve().parent / inc).is_dir():
            raise DcvError(f"{params}: forgetting.lm_eval.include_path: directory not found: {inc}")
        require(f"{params}: forgetting.lm_eval.enabled")
    with stage("evaluate-forgetting", params, SECTIONS) as ctx:
        run(ctx, inputs)
