"""Stage of every fine-tuning arm (`dcv stage sft`, `dcv stage rl`, `dcv stage protect`, ...): train only.

    dcv stage <arm> [--params params.yaml]

The arm (a registered entry of `dcv.arms`) trains from `models/base`, or from another arm's checkpoint (`<arm>.init`,
`<arm>.init_step`: seed s from that arm's seed s), on the prompts of `data/prepared/target/train.jsonl` for each
seed of `common.seeds`, with its own params section. Outs (one DVC
out per arm, written atomically: a killed run leaves only `.tmp-*` siblings):

    models/<arm>/seed-<s>/checkpoints/step-<n>/   at each checkpoint step of the arm's budget
    models/<arm>/seed-<s>/final/                  the last checkpoint's weights
    metrics/<arm>.json                            budget, per seed: seconds and the last training logs; wall_s

Checkpoints are measured later, once, by stage evaluate-forgetting. The MLflow run holds the training curves
(`seed-<s>/train/<key>`: loss, reward, reward_std, ...), the final models and, for GRPO, a table of sampled
completions (`completions.json`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, is_main_process, seed_everything, stage, stage_params

COMMON = ["common.seeds", "common.device", "common.torch_threads", "common.launch"]


def params_keys(arm: str) -> list[str]:
    """The params an arm's stage reads (dvc.yaml tracks exactly these)."""
    return [arm, *COMMON]


def load_inputs(layout, arm) -> dict:
    """Target train rows, the arm's extra probe splits and the base, checked before the MLflow run opens
    (errors name file and line)."""
    from dcv.arms.data import load_target
    from dcv.probes import load_probes

    inputs = {"train": load_target(layout.target_file("train"))}
    for split in arm.inputs:
        files = sorted(layout.prepared(split).glob("*.jsonl"))
        if not files:
            raise DcvError(f"{layout.prepared(split)}: no probe sets (*.jsonl; run stage prepare-data)")
        inputs[split] = {f.stem: load_probes(f) for f in files}
    if not (layout.base_model / "config.json").is_file():
        raise DcvError(f"{layout.base_model}: not a model directory (run stage base first)")
    return inputs


def start_of(layout, cfg, seed: int) -> tuple[str, Path]:
    """(model id, directory) a seed of an arm trains from: the base, or checkpoint `init_step` (null: the final one)
    of seed `seed` of arm `init`."""
    from dcv.layout import BASE, model_id
    from dcv.models import read_marker

    if cfg.init == BASE:
        return BASE, layout.base_model
    d = layout.checkpoint_dir(cfg.init, seed, cfg.init_step) if cfg.init_step else layout.final_dir(cfg.init, seed)
    step = cfg.init_step or read_marker(d).get("step")
    return model_id(cfg.init, seed, step or 0), d


def check_starts(layout, name: str, cfg, seeds: list[int]) -> None:
    """Every seed's start is a trained model (an arm that continues another needs that arm's stage run first)."""
    for seed in seeds:
        mid, d = start_of(layout, cfg, seed)
        if mid != "base" and not (d / "config.json").is_file():
            raise DcvError(f"{layout.rel(d)}: not a model directory ({name}.init {cfg.init}, init_step "
                           f"{cfg.init_step}: seed {seed} starts there; run stage {cfg.init} first)")


def file_lines(path: Path) -> list[int]:
    """The line number of each non-blank line (read_jsonl's rows) of a text file."""
    return [i for i, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1) if line.strip()]


def check_fits(tok, rows: list[dict], cfg, key: str, where: str, lines: list[int] | None = None) -> None:
    """An arm that truncates its sequences (`max_length`, with a `completion_form`: SFT and its kin) must fit every
    row's prompt, completion and <eos> (as TRL tokenizes them): truncation would cut the completion the loss falls
    on, and TRL drops rows left with none. `where` names the rows' file, `lines` their line numbers."""
    max_length, form = getattr(cfg, "max_length", None), getattr(cfg, "completion_form", None)
    if max_length is None or form is None:
        return
    from dcv.arms.data import gold_completion

    texts = [r["prompt"] + gold_completion(r, form) + (tok.eos_token or "") for r in rows]
    lens = [len(x) for x in tok(texts)["input_ids"]]
    over = [i for i, n in enumerate(lens) if n > max_length]
    if over:
        first = over[0]
        line = lines[first] if lines else first + 1
        raise DcvError(f"{key}.max_length: {max_length} tokens, but {len(over)} of {len(rows)} rows of {where} are "
                       f"longer (line {line}: {lens[first]} tokens with its completion; the longest {max(lens)}): "
                       f"truncation would cut the completions the loss falls on")


def meta_model(config):
    """The model of a transformers config with its weights on the meta device (no memory, no compute)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def check_lora(model, cfg, key: str) -> None:
    """With `finetune: lora`, every name of `lora.target_modules` must match a layer peft can wrap (its rule: the
    module's name, or its last dotted parts); peft itself only fails when none matches, after loading the model."""
    if cfg.finetune != "lora":
        return
    import torch
    from transformers.pytorch_utils import Conv1D

    wrappable = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, Conv1D)
    modules = dict(model.named_modules())
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, wrappable)})
    for t in cfg.lora.target_modules:
        hits = [m for n, m in modules.items() if n == t or n.endswith("." + t)]
        if not hits:
            raise DcvError(f"{key}.lora.target_modules: {t!r} matches no module of the base model (its layers: "
                           f"{', '.join(leaves)})")
        bad = sorted({type(m).__name__ for m in hits if not isinstance(m, wrappable)})
        if bad:
            raise DcvError(f"{key}.lora.target_modules: {t!r} matches {', '.join(bad)}, which LoRA cannot wrap "
                           f"(name a layer: {', '.join(leaves)})")


def check_generation(cfg, key: str, device) -> None:
    """vLLM generation (`use_vllm`) needs CUDA and the vllm package: said before the model loads, not by TRL after."""
    if not getattr(cfg, "use_vllm", False):
        return
    import importlib.util

    if device.type != "cuda":
        raise DcvError(f"{key}.use_vllm: vLLM generates on CUDA only (common.device resolves to {device.type})")
    if importlib.util.find_spec("vllm") is None:
        raise DcvError(f"{key}.use_vllm: the vllm package is not installed (pip install vllm, the version TRL 1.16 "
                       f"supports)")


def check_inputs(layout, arm, cfg, inputs: dict, where: str) -> None:
    """What the arm's params imply about its inputs, before the MLflow run opens: the rows fit `max_length`, LoRA's
    target modules exist in the base (errors name the params file and key)."""
    from transformers import AutoConfig

    from dcv.models import load_tokenizer

    try:
        tok = load_tokenizer(layout.base_model)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DcvError(f"{layout.base_model}: cannot load the tokenizer ({first})") from None
    train = layout.target_file("train")
    try:
        check_fits(tok, inputs["train"], cfg, arm.name, layout.rel(train), file_lines(train))
        if cfg.finetune == "lora":
            check_lora(meta_model(AutoConfig.from_pretrained(str(layout.base_model))), cfg, arm.name)
    except DcvError as e:
        raise DcvError(f"{where}: {e}") from None


def train_seed(ctx: StageContext, arm, seed: int, out: Path, inputs: dict, marker_base: dict,
               samples: list[dict]) -> dict:
    """Train one seed, saving a checkpoint at each checkpoint step (main process only)."""
    from dcv.arms.registry import TrainJob
    from dcv.arms.train import CheckpointCallback, save_checkpoint
    from dcv.models import load_model, resolve_device

    cfg = getattr(ctx.params, arm.name)
    t0 = time.perf_counter()
    seed_everything(seed, ctx.params.common.torch_threads)
    start, start_dir = start_of(ctx.layout, cfg, seed)
    model, tok = load_model(start_dir, "cpu", "float32")  # the Trainer places it on the device
    marker = {**marker_base, "arm": arm.name, "seed": seed, "init": start, "finetune": cfg.finetune,
              "config": cfg.model_dump(mode="json")}
    saved: list[int] = []
    last_logs: dict[str, float] = {}
    rel = lambda step: out / ctx.layout.checkpoint_dir(arm.name, seed, step).relative_to(ctx.layout.arm_dir(arm.name))  # noqa: E731

    def on_checkpoint(step: int, m, state_dict) -> None:
        save_checkpoint(m, tok, rel(step), {**marker, "step": step}, state_dict)
        saved.append(step)

    def on_log(step: int, logs: dict) -> None:
        last_logs.update({k: v for k, v in logs.items() if "time" not in k and "per_second" not in k})  # no timings
        ctx.run.log_step(step, {f"seed-{seed}/train/{k}": v for k, v in logs.items()})

    def on_samples(rows: list[dict]) -> None:
        samples.extend({"seed": seed, **r} for r in rows)

    callback = CheckpointCallback(cfg.checkpoint_steps(), on_checkpoint, on_log, label=f"{arm.name} seed {seed}")
    device = resolve_device(ctx.params.common.device)
    with tempfile.TemporaryDirectory(prefix=f"dcv-{arm.name}-scratch-") as scratch:
        arm.train(TrainJob(model, tok, inputs["train"], cfg, seed, device, Path(scratch), callback, on_samples,
                           inputs))
    if not is_main_process():
        return {}
    if not saved or saved[-1] != cfg.max_steps:
        raise RuntimeError(f"{arm.name} seed {seed}: training stopped at step {saved[-1] if saved else 0}, "
                           f"not {cfg.max_steps}")
    final = out / ctx.layout.final_dir(arm.name, seed).relative_to(ctx.layout.arm_dir(arm.name))
    shutil.copytree(rel(cfg.max_steps), final)  # final/ = the last checkpoint
    return {"wall_s": round(time.perf_counter() - t0, 2), "checkpoint_steps": saved, "last_logs": last_logs}


def base_fields(base_dir: Path, main: bool) -> dict:
    """What every checkpoint's marker says of its base. Only the main process hashes the base's weights when its
    marker lacks them (a 3B model's 6 GB read once, not once per rank): the other ranks save nothing."""
    from dcv.models import read_marker, weight_hashes

    marker = read_marker(base_dir)
    sha = marker.get("weights_sha256") or (weight_hashes(base_dir) if main else None)
    return {"tokenizer": marker.get("tokenizer", "auto"), "base": marker, "base_weights_sha256": sha}


def run(ctx: StageContext, arm, inputs: dict) -> dict:
    from dcv.models import load_model, resolve_device

    t0 = time.perf_counter()
    cfg, common = getattr(ctx.params, arm.name), ctx.params.common
    seed_everything(common.seeds[0], common.torch_threads)
    marker_base = base_fields(ctx.layout.base_model, is_main_process())
    prepared = {}
    if arm.prepare is not None:
        base_model, tok = load_model(ctx.layout.base_model, str(resolve_device(common.device)), "auto")
        prepared = arm.prepare(base_model, tok, cfg, inputs)
        del base_model
    inputs = {**inputs, "prepared": prepared}
    samples: list[dict] = []
    per_seed: dict[int, dict] = {}
    arm_dir = ctx.layout.arm_dir(arm.name)
    if not is_main_process():  # the other ranks of a distributed launch only train alongside, and write nothing
        with tempfile.TemporaryDirectory(prefix=f"dcv-{arm.name}-rank-") as out:
            for seed in common.seeds:
                train_seed(ctx, arm, seed, Path(out), inputs, marker_base, samples)
        return {}
    with io.atomic_dir(arm_dir) as out:
        for seed in common.seeds:
            per_seed[seed] = train_seed(ctx, arm, seed, out, inputs, marker_base, samples)
            print(f"{arm.name}: seed {seed} trained, {per_seed[seed]['wall_s']:.0f} s", flush=True)
    if samples:
        ctx.run.log_table({k: [s[k] for s in samples] for k in ("seed", "step", "prompt", "completion", "reward")},
                          "completions.json")
    metrics = {"arm": arm.name, "description": arm.describe(cfg), "config": cfg.model_dump(mode="json"),
               "budget": {"max_steps": cfg.max_steps, "prompts_per_step": cfg.prompts_per_step,
                                           "checkpoint_steps": cfg.checkpoint_steps()},
               "prepared": prepared, "seeds": {str(s): v for s, v in per_seed.items()}}
    return ctx.finish(metrics, t0, ctx.layout.metrics(arm.name),
                      [(ctx.layout.final_dir(arm.name, seed), f"model/seed-{seed}") for seed in common.seeds],
                      final=lambda m: {"seeds": {s: {"wall_s": v["wall_s"], "last": v["last_logs"]}
                                                 for s, v in m["seeds"].items()}})


LAUNCHED = "DCV_LAUNCHED"


def launch_command(arm: str, params_path: Path, launch, cpu: bool) -> list[str]:
    """`accelerate launch` of this same stage with the repository's accelerate config."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launch.num_processes)]
    if launch.config_file:
        cmd += ["--config_file", str(params_path.resolve().parent / launch.config_file)]
    if cpu:
        cmd += ["--cpu"]
    return cmd + ["-m", "stages.cli", "stage", arm, "--params", str(params_path.resolve())]


def run_launcher(cmd: list[str], env: dict, grace_s: float = 60.0) -> int:
    """Run `accelerate launch` in its own process group; when this process is interrupted (SIGINT, SIGTERM), the
    whole group gets SIGTERM, so every rank ends its run and removes its temporaries (SIGKILL after `grace_s`)."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
        raise


def main(name: str, params: str) -> None:
    """Bad params, then bad inputs, stop the stage before anything is written (not even the MLflow run).

    With `common.launch` set (more than one process, or an accelerate config), the stage runs itself again under
    `accelerate launch`; in there, rank 0 tracks and saves, the other ranks only train."""
    from dcv.arms import REGISTRY
    from dcv.layout import Layout

    arm = REGISTRY[name]
    p, root = stage_params(params, name, params_keys(name))
    inputs = load_inputs(Layout(root), arm)
    check_starts(Layout(root), name, getattr(p, name), list(p.common.seeds))
    check_inputs(Layout(root), arm, getattr(p, name), inputs, params)
    from dcv.models import resolve_device

    try:
        check_generation(getattr(p, name), name, resolve_device(p.common.device))
    except DcvError as e:
        raise DcvError(f"{params}: {e}") from None
    if p.common.launch.enabled and not os.environ.get(LAUNCHED):
        from dcv.models import resolve_device

        cmd = launch_command(name, Path(params), p.common.launch, resolve_device(p.common.device).type == "cpu")
        rc = run_launcher(cmd, {**os.environ, LAUNCHED: "1"})
        if rc:
            raise DcvError(f"{name}: `accelerate launch` exited with status {rc} (its error is above)")
        return
    with stage(name, params, params_keys(name)) as ctx:
        run(ctx, arm, inputs)
