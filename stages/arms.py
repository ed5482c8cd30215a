"""What stages `sft` and `rl` share: read and check the inputs, train every seed, measure each checkpoint, write.

    dcv stage sft [--params params.yaml]
    dcv stage rl  [--params params.yaml]

Both start from `models/base` and train on the prompts of `data/prepared/target/train.jsonl` for each seed of
`common.seeds`. Outs (one DVC out per arm, written atomically: a killed run leaves only `.tmp-*` siblings):

    models/<arm>/seed-<s>/checkpoints/step-<n>/   every `save_every` steps (or at `save_steps`) and the last step
    models/<arm>/seed-<s>/final/
    metrics/<arm>.json

metrics/<arm>.json holds the aggregate over seeds (`target_accuracy`, `probe_accuracy`, `forward_kl`, `forward_kl_seq`, `probes`,
`curve`: one entry per checkpoint step, step 0 = the base), the spread over seeds (`std`), each seed's figures and
curve (`seeds`), the budget and `wall_s`. The same curves are MLflow step metrics (`seed-<s>/<metric>` per seed,
`curve/<metric>` for the mean over seeds; the plain names hold the final values), TRL's training logs are `seed-<s>/train/<key>` (GRPO: `reward`, `reward_std`, ...), and
the RL arm logs a table of sampled completions (`completions.json`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, is_main_process, seed_everything, stage

DATA = "data/prepared"
BASE = "models/base"
CURVE_KEYS = ("target_accuracy", "probe_accuracy", "forward_kl", "forward_kl_seq")


def sections(arm: str) -> list[str]:
    return [arm, "common.seeds", "common.device", "common.torch_threads", "common.experiment", "common.launch"]


def load_inputs(root: Path) -> tuple[list[dict], list[dict], dict[str, list[dict]]]:
    """Target train/eval rows and probe sets, checked before the MLflow run opens (errors name file and line)."""
    from dcv.arms.data import load_target
    from dcv.probes import load_probes

    data = root / DATA
    train = load_target(data / "target" / "train.jsonl")
    eval_ = load_target(data / "target" / "eval.jsonl")
    probes = {f.stem: load_probes(f) for f in sorted((data / "probes").glob("*.jsonl"))}
    if not probes:
        raise DcvError(f"{data / 'probes'}: no probe sets (*.jsonl)")
    if not (root / BASE / "config.json").is_file():
        raise DcvError(f"{root / BASE}: not a model directory (run stage base first)")
    return train, eval_, probes


def _summary(m: dict) -> dict:
    return {k: m[k] for k in CURVE_KEYS}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _std(xs: list[float]) -> float:
    return statistics.pstdev(xs) if len(xs) > 1 else 0.0


def aggregate(arm: str, cfg, per_seed: dict[int, dict], base: dict, wall_s: float) -> dict:
    finals = [s["final"] for s in per_seed.values()]
    steps = [c["step"] for c in next(iter(per_seed.values()))["curve"]]
    curve = []
    for i, step in enumerate(steps):
        curve.append({"step": step, **{k: _mean([s["curve"][i][k] for s in per_seed.values()]) for k in CURVE_KEYS}})
    caps = sorted(finals[0]["probes"])
    return {
        "arm": arm,
        **{k: _mean([f[k] for f in finals]) for k in CURVE_KEYS},
        "probes": {c: _mean([f["probes"][c] for f in finals]) for c in caps},
        "std": {k: _std([f[k] for f in finals]) for k in CURVE_KEYS},
        "base": {**_summary(base), "probes": base["probes"]},
        "curve": curve,
        "seeds": {str(s): {**_summary(v["final"]), "probes": v["final"]["probes"],
                           "target_letter_distribution": v["final"]["target_letter_distribution"],
                           "curve": [{"step": c["step"], **_summary(c)} for c in v["curve"]], "wall_s": v["wall_s"]}
                  for s, v in per_seed.items()},
        "budget": {"max_steps": cfg.max_steps, "save_every": cfg.save_every, "prompts_per_step": cfg.prompts_per_step,
                   "checkpoint_steps": cfg.checkpoint_steps()},
        "wall_s": round(wall_s, 2),
    }


def train_seed(ctx: StageContext, arm: str, seed: int, out, train_rows, evaluator, base_eval: dict,
               marker_base: dict, samples: list[dict]) -> dict:
    """Train one seed, saving a checkpoint every `save_every` steps; then measure each saved checkpoint (main
    process only, from disk: what is measured is exactly what downstream stages read)."""
    from dcv.arms import checkpoint_dir, checkpoint_dirs, final_dir
    from dcv.arms.train import CheckpointCallback, save_checkpoint, train_rl, train_sft
    from dcv.models import load_model, resolve_device

    cfg = getattr(ctx.params, arm)
    t0 = time.perf_counter()
    seed_everything(seed, ctx.params.common.torch_threads)
    model, tok = load_model(ctx.path(BASE), "cpu", "float32")  # the Trainer places it on the device
    marker = {**marker_base, "arm": arm, "seed": seed, "finetune": cfg.finetune}
    saved: list[int] = []

    def on_checkpoint(step: int, m, state_dict) -> None:
        save_checkpoint(m, tok, checkpoint_dir(out, seed, step), {**marker, "step": step}, state_dict)
        saved.append(step)

    def on_log(step: int, logs: dict) -> None:
        ctx.run.log_step(step, {f"seed-{seed}/train/{k}": v for k, v in logs.items()})

    def on_samples(rows: list[dict]) -> None:
        samples.extend({"seed": seed, **r} for r in rows)

    callback = CheckpointCallback(cfg.checkpoint_steps(), on_checkpoint, on_log)
    device = resolve_device(ctx.params.common.device)
    with tempfile.TemporaryDirectory(prefix=f"dcv-{arm}-scratch-") as scratch:
        if arm == "sft":
            train_sft(model, tok, train_rows, cfg, seed, device, scratch, callback)
        else:
            train_rl(model, tok, train_rows, cfg, seed, device, scratch, callback, on_samples)
    del model
    if not is_main_process():
        return {}
    if not saved or saved[-1] != cfg.max_steps:
        raise RuntimeError(f"{arm} seed {seed}: training stopped at step {saved[-1] if saved else 0}, not {cfg.max_steps}")
    shutil.copytree(checkpoint_dir(out, seed, cfg.max_steps), final_dir(out, seed))  # final/ = the last checkpoint
    curve = [{"step": 0, **base_eval}]
    for step, directory in checkpoint_dirs(out, seed).items():
        m, _ = load_model(directory, str(device), "float32")
        r = evaluator(m)
        curve.append({"step": step, **r})
        ctx.run.log_step(step, {f"seed-{seed}/{k}": v for k, v in r.items() if k != "target_letter_distribution"})
    return {"curve": curve, "final": curve[-1], "wall_s": round(time.perf_counter() - t0, 2)}


def run(ctx: StageContext, arm: str, inputs: tuple | None = None) -> dict:
    from dcv.arms import final_dir
    from dcv.arms.evaluate import CheckpointEvaluator
    from dcv.models import load_model, read_marker, resolve_device, weight_hashes

    t0 = time.perf_counter()
    cfg = getattr(ctx.params, arm)
    common = ctx.params.common
    train_rows, eval_rows, probes = inputs or load_inputs(ctx.root)
    seed_everything(common.seeds[0], common.torch_threads)
    base_marker = read_marker(ctx.path(BASE))
    marker_base = {"tokenizer": base_marker.get("tokenizer", "auto"), "base": base_marker,
                   "base_weights_sha256": weight_hashes(ctx.path(BASE))}
    samples: list[dict] = []
    if not is_main_process():  # the other ranks of a distributed launch only train alongside, and write nothing
        with tempfile.TemporaryDirectory(prefix=f"dcv-{arm}-rank-") as out:
            for seed in common.seeds:
                train_seed(ctx, arm, seed, Path(out), train_rows, None, {}, marker_base, samples)
        return {}
    base_model, tok = load_model(ctx.path(BASE), str(resolve_device(common.device)), "float32")
    evaluator = CheckpointEvaluator(base_model, tok, eval_rows, probes, cfg.eval, f"{DATA}/probes")
    base_eval = evaluator(base_model)
    del base_model
    ctx.run.log_step(0, {f"curve/{k}": v for k, v in _summary(base_eval).items()})

    per_seed: dict[int, dict] = {}
    out_dir = ctx.path(f"models/{arm}")
    with io.atomic_dir(out_dir) as out:
        for seed in common.seeds:
            per_seed[seed] = train_seed(ctx, arm, seed, out, train_rows, evaluator, base_eval, marker_base, samples)
    metrics = aggregate(arm, cfg, per_seed, base_eval, time.perf_counter() - t0)
    for c in metrics["curve"][1:]:
        ctx.run.log_step(c["step"], {f"curve/{k}": c[k] for k in CURVE_KEYS})
    if samples:
        ctx.run.log_table({k: [s[k] for s in samples] for k in ("seed", "step", "prompt", "completion", "reward")},
                          "completions.json")
    return ctx.finish(metrics, t0, f"metrics/{arm}.json",
                      [(final_dir(out_dir, seed), f"model/seed-{seed}") for seed in common.seeds],
                      final=lambda m: {k: v for k, v in m.items() if k not in ("curve", "budget")})


LAUNCHED = "DCV_LAUNCHED"


def launch_command(arm: str, params_path: Path, launch, cpu: bool) -> list[str]:
    """`accelerate launch` of this same stage with the repository's accelerate config."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launch.num_processes)]
    if launch.config_file:
        cmd += ["--config_file", str(params_path.resolve().parent / launch.config_file)]
    if cpu:
        cmd += ["--cpu"]
    return cmd + ["-m", "stages.cli", "stage", arm, "--params", str(params_path.resolve())]


def main(arm: str, params: str) -> None:
    """Bad params, then bad inputs, stop the stage before anything is written (not even the MLflow run).

    With `common.launch` set (more than one process, or an accelerate config), the stage runs itself again under
    `accelerate launch`; in there, rank 0 tracks, saves and measures, the other ranks only train."""
    from stages.params import load_params

    p = load_params(params)
    inputs = load_inputs(Path(params).resolve().parent)
    if p.common.launch.enabled and not os.environ.get(LAUNCHED):
        from dcv.models import resolve_device

        cmd = launch_command(arm, Path(params), p.common.launch, resolve_device(p.common.device).type == "cpu")
        rc = subprocess.run(cmd, env={**os.environ, LAUNCHED: "1"}).returncode
        if rc:
            raise DcvError(f"{arm}: `accelerate launch` exited with status {rc} (its error is above)")
        return
    with stage(arm, params, sections(arm)) as ctx:
        run(ctx, arm, inputs)
