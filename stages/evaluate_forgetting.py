"""Stage `evaluate-forgetting`: the one place that loads and measures every model.

    dcv stage evaluate-forgetting [--params params.yaml]

For the base and every checkpoint of every arm of `common.arms` and every seed of `common.seeds`: accuracy and
logit difference on each capability's forgetting split (`data/prepared/forgetting/`, disjoint from the scoring
split the circuits are measured on: `dcv.splits`), target eval accuracy and the forward KL on the target eval
prompts (`data/prepared/target/eval.jsonl`), the L2 distance of the weights to the base's (`param_distance`), and,
with `forgetting.lm_eval.enabled`, local lm-evaluation-harness benchmarks on the base and the final (or every)
checkpoint. Outs:

    measurements/models.csv          one row per model and capability (`dcv.measurements.Measurement`): what
                                     score-dcv, the forgetting summaries and the report read
    metrics/evaluate-forgetting.json per arm: forgetting at the final step (mean, sample SD over seeds, per
                                     capability), adaptation steps, the curve over steps, every seed's checkpoints
    plots/forgetting/curves.csv      every arm's curves (means, min and max over seeds; column `arm`) for `dvc plots`

MLflow: the stage's run holds the summaries; one child run per arm (tag `dcv.arm`) holds that arm's curves by step
under the same names for every arm (`target_accuracy`, `prior_accuracy`, `forgetting`, `forward_kl`, ...; means
over seeds, `seed-<s>/<name>` per seed), so the UI's Compare overlays the arms.
"""

from __future__ import annotations

import time
from pathlib import Path

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, seed_everything, stage, stage_params

PARAMS = ["forgetting", "common.arms", "common.seeds", "common.device", "common.torch_threads"]


def load_inputs(layout, arms: list[str], seeds: list[int]) -> tuple:
    """Target eval rows, probe sets and every model, checked before the MLflow run opens."""
    from dcv.arms.data import load_target
    from dcv.probes import load_probes
    from dcv.splits import FORGETTING

    eval_rows = load_target(layout.target_file("eval"))
    files = sorted(layout.prepared(FORGETTING).glob("*.jsonl"))
    if not files:
        raise DcvError(f"{layout.prepared(FORGETTING)}: no probe sets (*.jsonl; rerun stage prepare-data)")
    probes = {f.stem: load_probes(f) for f in files}
    return eval_rows, probes, layout.model_refs(arms, seeds)


def lm_eval_scores(ctx: StageContext, refs, load) -> dict[str, dict]:
    """model id -> task -> metric -> score, on the base and each seed's final (or every) checkpoint."""
    from dcv.lm_eval_bridge import evaluate

    cfg = ctx.params.forgetting.lm_eval
    include, data_dir = _under(ctx.root, cfg.include_path), _under(ctx.root, cfg.data_dir)
    gen = {"max_gen_toks": cfg.max_gen_toks} if cfg.max_gen_toks else None
    out = {}
    for ref in refs:
        if ref.is_base or cfg.models == "all" or ref.final:
            model, tok = load(ref)
            out[ref.id] = evaluate(model, tok, include, cfg.tasks, cfg.limit, cfg.batch_size, ctx.params.common.seeds[0],
                                   data_dir, cfg.allow_code_execution, cfg.chat, cfg.system, gen)
            del model
    return out


def log_arm_curves(ctx: StageContext, metrics: dict, refs) -> None:
    """One child run per arm: its curves by step, named alike for every arm."""
    from dcv.models import read_marker

    for arm, a in metrics["arms"].items():
        first = next(r for r in refs if r.arm == arm)
        cfg = read_marker(first.dir).get("config", {})
        child = ctx.run.child(arm, {arm: cfg}, {"dcv.arm": arm})
        for p in a["curve"]:
            child.log_step(p["step"], {k: p[k] for k in p if k != "step" and not k.endswith(("_min", "_max"))})
        for s, v in a["seeds"].items():
            for c in v["checkpoints"]:
                child.log_step(c["step"], {f"seed-{s}/{k}": c[k] for k in ("target_accuracy", "prior_accuracy",
                                                                           "forgetting", "forward_kl")})
        child.log_final({"final": {k: a[k] for k in ("target_accuracy", "prior_accuracy", "forgetting", "forgetting_sd",
                                                     "forward_kl", "forward_kl_seq", "adaptation_steps")}})
        child.end()


def run(ctx: StageContext, inputs: tuple) -> dict:
    from dcv.evaluation import ModelEvaluator
    from dcv.forgetting import CURVE_KEYS, summarize
    from dcv.layout import BASE
    from dcv.measurements import MeasurementTable, rows_for
    from dcv.models import TokenizerCache, load_model, read_marker, resolve_device

    t0 = time.perf_counter()
    cfg, common = ctx.params.forgetting, ctx.params.common
    eval_rows, probes, refs = inputs
    seed_everything(common.seeds[0], common.torch_threads)
    device = str(resolve_device(common.device))
    load = lambda ref: load_model(ref.dir, device, "float32")  # noqa: E731  (lm-eval: a tokenizer of its own)
    tokenizers = TokenizerCache()  # the measures only read it: the checkpoints' copies of the base's, loaded once
    base_model, tok = load_model(refs[0].dir, device, "float32", tokenizers=tokenizers)
    from dcv.splits import FORGETTING

    where = {c: ctx.layout.rel(ctx.layout.probe_file(FORGETTING, c)) for c in probes}
    evaluator = ModelEvaluator(base_model, tok, eval_rows, probes, cfg.eval, where)
    del base_model
    measured = {}
    for ref in refs:
        t = time.perf_counter()
        model, _ = load_model(ref.dir, device, "float32", tokenizers=tokenizers)
        measured[ref.id] = evaluator.measure(model)
        del model
        print(f"evaluate-forgetting: {ref.id}: {time.perf_counter() - t:.1f} s", flush=True)
    if cfg.lm_eval.enabled:
        for mid, scores in lm_eval_scores(ctx, refs, load).items():
            measured[mid]["lm_eval"] = scores
    inits = {ref.id: read_marker(ref.dir).get("init", BASE) for ref in refs if not ref.is_base}
    table = MeasurementTable([row for ref in refs for row in rows_for(ref, measured[ref.id], inits.get(ref.id, BASE))])
    metrics = summarize(table, list(common.arms), list(common.seeds), cfg.adaptation_fraction)

    table.write(ctx.layout.measurements)
    with io.atomic_dir(ctx.layout.plots("forgetting")) as d:
        cols = ["arm", "step"] + [k + sfx for k in CURVE_KEYS for sfx in ("", "_min", "_max")]
        io.write_csv(d / "curves.csv", cols, [{"arm": arm, **p} for arm, a in metrics["arms"].items() for p in a["curve"]])
    metrics = io.json_safe(metrics)
    log_arm_curves(ctx, metrics, refs)
    return ctx.finish(metrics, t0, ctx.layout.metrics("evaluate-forgetting"),
                      [(ctx.layout.plots("forgetting"), "plots"), (ctx.layout.measurements, None)],
                      final=lambda m: {k: v for k, v in m.items() if k != "arms"}
                      | {"arms": {arm: {k: v for k, v in a.items() if k not in ("curve", "seeds")}
                                  for arm, a in m["arms"].items()}})


def _under(root: Path, path: str | None) -> Path | None:
    """A params path, relative to the params file's directory unless absolute."""
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() else root / p


def check_lm_eval(cfg, root: Path, where: str) -> None:
    """With `forgetting.lm_eval.enabled`: the task and data directories exist, the harness is installed, and each
    task's offline needs (its data files, packages, code execution) are met, before any model is loaded."""
    if not cfg.enabled:
        return
    from dcv.lm_eval_bridge import check_requirements, require

    if cfg.include_path is None:
        raise DcvError(f"{where}: forgetting.lm_eval.include_path: null, but lm_eval is enabled (a directory of "
                       f"task YAMLs)")
    inc = _under(root, cfg.include_path)
    if not inc.is_dir():
        raise DcvError(f"{where}: forgetting.lm_eval.include_path: directory not found: {cfg.include_path}")
    data_dir = _under(root, cfg.data_dir)
    if data_dir is not None and not data_dir.is_dir():
        raise DcvError(f"{where}: forgetting.lm_eval.data_dir: directory not found: {cfg.data_dir}")
    try:
        check_requirements(inc, list(cfg.tasks), data_dir, cfg.allow_code_execution)
    except DcvError as e:
        raise DcvError(f"{where}: forgetting.lm_eval: {e}") from None
    require(f"{where}: forgetting.lm_eval.enabled")


def main(params: str) -> None:
    """Bad params, then bad inputs, stop the stage before anything is written (not even the MLflow run)."""
    from dcv.layout import Layout

    p, root = stage_params(params, "evaluate-forgetting", PARAMS)
    inputs = load_inputs(Layout(root), list(p.common.arms), list(p.common.seeds))
    check_lm_eval(p.forgetting.lm_eval, root, params)
    with stage("evaluate-forgetting", params, PARAMS) as ctx:
        run(ctx, inputs)
