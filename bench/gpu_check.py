"""The study's profile at its real shape, a few steps per stage: tokens/s of SFT and GRPO, heads/s of
extract-circuits, peak GPU memory, and the expected time of the full profile from them. One short script for a GPU
machine lent for minutes; `bench/gpu_check.sh` runs it under a hard 8-minute limit.

    python bench/gpu_check.py [--steps 3] [--arms sft,rl] [--budget 450] [--keep DIR] [--shrink]
                              [--tokenizer DIR] [--sciknoweval DIR]

The weights are random (a machine without network cannot fetch Qwen2.5-3B-Instruct): a Qwen2 with that model's
shape (36 layers x 16 heads, 2 key/value heads, width 2048, MLP 11008, the tokenizer's vocabulary), so the figures
are speed and memory, never quality. The project is a temporary copy of this checkout's params.yaml with
`profiles/study.yaml` applied, then shrunk to one seed, the arms of `--arms` (SFT and GRPO by default: the ones
whose cost differs; protect is SFT plus its penalty, rl_sft is rl from another start), `--steps` optimizer steps
per arm (checkpoints at the last step only), 16 probe pairs per capability, 8 target pairs, 32 target eval rows;
lm-eval off (no harness data there). Each stage runs as its own process (`python -m stages.cli stage <name>`, this
checkout's code) under what is left of `--budget` seconds (the whole check, model building included); a stage past
it is stopped and the figures so far are printed. A thread polls `nvidia-smi` for the peak memory in use.

Printed: seconds and peak memory per stage; per arm seconds per optimizer step (the seed's wall time over
`--steps`, model loading included: an upper bound) and tokens/s (TRL's `num_tokens`, the prompt and completion
tokens the arm trained on, over that wall time: a lower bound), for GRPO also generated tokens/s; for
extract-circuits head effects per second (models x capabilities x heads over the stage's seconds) and the DBM
mask's seconds per model; and the profile's expected hours at these rates, each scaling written out.
`--shrink` uses a tiny model of the same vocabulary, tiny GRPO groups, two capabilities and 20 DBM steps, to try
the script on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import signal
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# Qwen/Qwen2.5-3B-Instruct's config.json (the architecture fields)
QWEN25_3B = {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
             "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
             "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 2048, "tie_word_embeddings": True}
MEASURE = ("evaluate-forgetting", "extract-circuits")
CHECK = {"pairs": 16, "target_pairs": 8, "n_eval": 32}  # the check's probe and eval sizes (scaled up to the profile's)


class GpuPeak(threading.Thread):
    """Peak `memory.used` (MiB, summed over GPUs) while running; None without nvidia-smi."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak: float | None = None
        self.stop = threading.Event()

    def run(self):
        if shutil.which("nvidia-smi") is None:
            return
        while not self.stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout
            used = sum(float(x) for x in out.split() if x.strip())
            self.peak = used if self.peak is None else max(self.peak, used)
            self.stop.wait(0.5)


def random_model(directory: Path, tokenizer: Path, shape: dict) -> int:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    cfg = Qwen2Config(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **shape)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    model.save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return sum(p.numel() for p in model.parameters())


def shrink(steps: int, arms: dict, chosen: list[str]) -> dict:
    pairs = [[a, b] for i, a in enumerate(chosen) for b in chosen[i + 1:]]  # dcv.pairs may name only chosen arms
    out = {"common.seeds": [0], "common.arms": chosen, "dcv.pairs": pairs, "common.experiment": "gpu-check", "data.n_validation": 16,
           "data.probes.n_pairs": CHECK["pairs"], "data.probes.n_protection": 16, "data.probes.n_discovery": 16,
           "data.probes.n_forgetting": 16, "data.target.n_eval": CHECK["n_eval"],
           "data.target_pairs.n_pairs": CHECK["target_pairs"], "data.target_pairs.n_discovery": CHECK["target_pairs"],
           "forgetting.lm_eval.enabled": False, "dcv.n_bootstrap": 50, "dcv.n_permutations": 99}
    for arm in arms:
        out.update({f"{arm}.max_steps": steps, f"{arm}.save_every": steps, f"{arm}.save_steps": [steps],
                    f"{arm}.warmup_steps": min(arms[arm]["warmup_steps"], steps - 1), f"{arm}.logging_steps": 1})
        if arms[arm].get("init") not in (None, "base"):
            out[f"{arm}.init_step"] = steps  # its start arm's only checkpoint
    return out


def run_stage(cli: list[str], name: str, project: Path, env: dict, log: Path, seconds: float) -> int | None:
    """The stage's exit code, None when it ran past `seconds` (its process group killed)."""
    with log.open("w") as f:
        proc = subprocess.Popen([*cli, "stage", name], cwd=project, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=max(seconds, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return None


def arm_rates(project: Path, arm: str, steps: int) -> dict:
    m = json.loads((project / "metrics" / f"{arm}.json").read_text())
    s = m["seeds"]["0"]
    logs, wall = s["last_logs"], s["wall_s"]
    out = {"s_per_step": wall / steps, "tokens_per_s": logs.get("num_tokens", float("nan")) / wall}
    if "completions/mean_length" in logs:  # GRPO: completions per step x their mean length (the last logged step)
        cfg = m["config"]
        per_step = cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"]
        out["generated_per_s"] = per_step * logs["completions/mean_length"] * steps / wall
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--arms", default="sft,rl", help="comma-separated arms to train (default: sft,rl)")
    ap.add_argument("--budget", type=float, default=450, help="seconds for the whole check (default 450)")
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--shrink", action="store_true", help="a tiny model (try the script on a CPU)")
    ap.add_argument("--tokenizer", type=Path, default=SHARED / "qwen-tokenizer")
    ap.add_argument("--sciknoweval", type=Path, default=SHARED / "sciknoweval-chem-l3")
    args = ap.parse_args()
    if args.steps < 2:
        raise SystemExit("--steps: at least 2")
    t_start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - t_start)  # noqa: E731

    profile = yaml.safe_load((REPO / "profiles/study.yaml").read_text())
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    all_arms = defaults["common"]["arms"]
    chosen = [a for a in args.arms.split(",") if a]
    if not chosen or any(a not in all_arms for a in chosen):
        raise SystemExit(f"--arms: each of {all_arms}")
    for a in chosen:
        init = profile.get(a, {}).get("init") or defaults[a].get("init") or "base"
        if init != "base" and init not in chosen:
            raise SystemExit(f"--arms: {a} continues {init}: add it")

    root = args.keep or Path(tempfile.mkdtemp(prefix="dcv-gpu-check-"))
    project = root / "project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    for d in ("profiles", "configs"):
        shutil.copytree(REPO / d, project / d)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}

    n_params = random_model(root / "model", args.tokenizer, TINY if args.shrink else QWEN25_3B)
    print(f"# gpu check: random Qwen2 of {n_params / 1e9:.2f} B parameters ({'tiny' if args.shrink else 'Qwen2.5-3B shape'}),"
          f" arms {', '.join(chosen)}, {args.steps} steps each, budget {args.budget:.0f} s;"
          f" model built and saved in {time.perf_counter() - t_start:.0f} s\n", flush=True)
    sets = {"data.target.path": str(args.sciknoweval), "data.tokenizer": str(args.tokenizer),
            "base.hf.model": str(root / "model"), **shrink(args.steps, {a: profile[a] for a in all_arms}, chosen)}
    if args.shrink:  # a CPU try: 2 prompts per step, GRPO groups of 2 with 8 new tokens (the profile's 128 x 64 take hours)
        for a in all_arms:
            sets.update({f"{a}.per_device_train_batch_size": 2, f"{a}.gradient_accumulation_steps": 1})
            if "num_generations" in defaults[a]:
                sets.update({f"{a}.per_device_train_batch_size": 4, f"{a}.num_generations": 2,
                             f"{a}.generation_batch_size": 4, f"{a}.max_completion_length": 8})
        sets.update({"data.capabilities": ["ioi", "mcqa"], "circuits.dbm_steps": 20, "circuits.heads_per_forward": 8,
                     "forgetting.eval": {
            "max_new_tokens": 4, "batch_size": 8, "kl_samples": 2, "kl_max_new_tokens": 4, "kl_seed": 0}})
    cli = [sys.executable, "-m", "stages.cli"]
    r = subprocess.run([*cli, "profile", "apply", "study", *[x for k, v in sets.items() for x in ("-S", f"{k}={json.dumps(v)}")]],
                       cwd=project, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stdout + r.stderr)

    rows, stopped = [], None
    for name in ("prepare-data", "base", *chosen, *MEASURE):
        peak = GpuPeak()
        peak.start()
        t = time.perf_counter()
        log = root / f"{name}.log"
        rc = run_stage(cli, name, project, env, log, left())
        seconds = time.perf_counter() - t
        peak.stop.set()
        peak.join()
        rows.append((name, seconds, peak.peak))
        print(f"  {name}: {seconds:.1f} s, peak GPU memory {'n/a' if peak.peak is None else f'{peak.peak / 1024:.1f} GiB'}",
              flush=True)
        if rc is None:
            stopped = name
            print(f"  {name}: stopped, past the budget of {args.budget:.0f} s ({log})", flush=True)
            break
        if rc:
            tail = "\n".join(log.read_text().splitlines()[-20:])
            raise SystemExit(f"stage {name} failed (exit {rc}); the end of {log}:\n{tail}")

    print("\n| stage | seconds | peak GPU memory (GiB) |\n| --- | ---: | ---: |")
    for name, seconds, peak in rows:
        print(f"| {name} | {seconds:.1f} | {'n/a' if peak is None else f'{peak / 1024:.1f}'} |")
    done = {n: s for n, s, _ in rows if n != stopped}
    rates = {a: arm_rates(project, a, args.steps) for a in chosen if a in done}
    for a, x in rates.items():
        gen = f", generated {x['generated_per_s']:.0f} tokens/s" if "generated_per_s" in x else ""
        print(f"{a}: {x['s_per_step']:.2f} s per optimizer step, {x['tokens_per_s']:.0f} trained tokens/s{gen}")
    if "extract-circuits" in done:
        m = json.loads((project / "metrics/extract-circuits.json").read_text())
        caps = m["capabilities"]
        n_heads = next(iter(caps.values()))["n_heads"]
        heads = m["n_models"] * len(caps) * n_heads
        dbm = {c: v["seconds_per_model"] for c, v in m.get("study", {}).items()}
        print(f"extract-circuits ({m['method']}): {m['n_models']} models x {len(caps)} capabilities x {n_heads} heads "
              f"in {done['extract-circuits']:.0f} s: {heads / done['extract-circuits']:.1f} head effects/s "
              f"(the base's exact check and every DBM mask included); DBM seconds per model: {dbm}")
    if stopped:
        print(f"\nstopped at {stopped}: no expected time (rerun with fewer --steps or a larger --budget)")
        print(f"logs and project: {root}")
        raise SystemExit(1)

    seeds = len(defaults["common"]["seeds"])
    print(f"\nexpected for profiles/study.yaml ({seeds} seeds, arms {', '.join(all_arms)}):")
    train_s = 0.0
    for a in all_arms:
        like = a if a in rates else ("sft" if profile[a].get("loss_type") is None else "rl")
        x = rates.get(like)
        if x is None:
            print(f"  {a}: no rate measured like it (add it to --arms)")
            continue
        s = x["s_per_step"] * profile[a]["max_steps"] * seeds
        train_s += s
        note = "" if like == a else f" (at {like}'s rate: not measured)"
        print(f"  {a}: {x['s_per_step']:.2f} s/step x {profile[a]['max_steps']} steps x {seeds} seeds = {s / 3600:.2f} h{note}")
    n_ckpt = {a: len(profile[a]["save_steps"]) for a in all_arms}
    n_models = 1 + seeds * sum(n_ckpt.values())
    measured_models = 1 + len(chosen)
    pairs = defaults["data"]["probes"]["n_pairs"] / CHECK["pairs"]
    evals = profile["data"]["target"]["n_eval"] / CHECK["n_eval"]
    per_model = done["extract-circuits"] / measured_models * pairs + done["evaluate-forgetting"] / measured_models * evals
    print(f"  measurement: {n_models} models (the base + {seeds} seeds x {sum(n_ckpt.values())} checkpoints) x "
          f"{per_model:.0f} s per model = {n_models * per_model / 3600:.2f} h (extract-circuits' {done['extract-circuits']:.0f} s "
          f"over {measured_models} models x {pairs:.0f} for the profile's {defaults['data']['probes']['n_pairs']} pairs; "
          f"evaluate-forgetting's {done['evaluate-forgetting']:.0f} s over {measured_models} x {evals:.1f} for its "
          f"{profile['data']['target']['n_eval']} eval rows; lm-eval not included)")
    print(f"  total: about {(train_s + n_models * per_model) / 3600:.1f} h of GPU time")
    print(f"logs and project: {root}")


if __name__ == "__main__":
    main()
