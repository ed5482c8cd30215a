"""The study's profile at its real shape, a few steps per stage: seconds per step and peak GPU memory, and the
expected time of the full profile from them. One short script for a GPU machine lent for minutes.

    python bench/gpu_check.py [--steps 4] [--keep DIR] [--shrink] [--tokenizer DIR] [--sciknoweval DIR]

The weights are random (a machine without network cannot fetch Qwen2.5-3B-Instruct): a Qwen2 with that model's
shape (36 layers x 16 heads, 2 key/value heads, width 2048, MLP 11008, the tokenizer's vocabulary), so the figures
are speed and memory, never quality. The project is a temporary copy of this checkout's params.yaml with
`profiles/study.yaml` applied, then shrunk to one seed, `--steps` optimizer steps per arm (checkpoints at the last
step only), small probe splits and 32 target eval rows; lm-eval off (no harness data there). Each stage runs as its
own process (`python -m stages.cli stage <name>`, this checkout's code); a thread polls `nvidia-smi` for the peak
memory in use. Printed: seconds per stage, per training step of each arm (its wall time over `--steps`, so model
loading is included: an upper bound), peak memory, and the profile's expected hours (steps x seeds of
profiles/study.yaml at these per-step rates, measurement stages scaled by the number of checkpoints).
`--shrink` uses a tiny model of the same vocabulary instead, to try the script on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
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
STAGES = ("prepare-data", "base", "sft", "rl", "protect", "rl_sft", "evaluate-forgetting", "extract-circuits", "score-dcv")


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


def shrink(steps: int, arms: dict) -> dict:
    out = {"common.seeds": [0], "common.experiment": "gpu-check", "data.n_validation": 16,
           "data.probes.n_pairs": 16, "data.probes.n_protection": 16, "data.probes.n_discovery": 16,
           "data.probes.n_forgetting": 16, "data.target.n_eval": 32,
           "data.target_pairs.n_pairs": 8, "data.target_pairs.n_discovery": 8, "forgetting.lm_eval.enabled": False,
           "dcv.n_bootstrap": 50, "dcv.n_permutations": 99}
    for arm in arms:
        out.update({f"{arm}.max_steps": steps, f"{arm}.save_every": steps, f"{arm}.save_steps": [steps],
                    f"{arm}.warmup_steps": min(arms[arm]["warmup_steps"], steps - 1), f"{arm}.logging_steps": 1})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--shrink", action="store_true", help="a tiny model (try the script on a CPU)")
    ap.add_argument("--tokenizer", type=Path, default=SHARED / "qwen-tokenizer")
    ap.add_argument("--sciknoweval", type=Path, default=SHARED / "sciknoweval-chem-l3")
    args = ap.parse_args()
    if args.steps < 2:
        raise SystemExit("--steps: at least 2")

    root = args.keep or Path(tempfile.mkdtemp(prefix="dcv-gpu-check-"))
    project = root / "project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    for f in ("params.yaml",):
        shutil.copy(REPO / f, project / f)
    for d in ("profiles", "configs"):
        shutil.copytree(REPO / d, project / d)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}

    t0 = time.perf_counter()
    n_params = random_model(root / "model", args.tokenizer, TINY if args.shrink else QWEN25_3B)
    print(f"# gpu check: random Qwen2 of {n_params / 1e9:.2f} B parameters ({'tiny' if args.shrink else 'Qwen2.5-3B shape'}),"
          f" {args.steps} steps per arm; built and saved in {time.perf_counter() - t0:.0f} s\n", flush=True)
    profile = yaml.safe_load((REPO / "profiles/study.yaml").read_text())
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    ARMS = defaults["common"]["arms"]  # noqa: N806
    sets = {"data.target.path": str(args.sciknoweval), "data.tokenizer": str(args.tokenizer),
            "base.hf.model": str(root / "model"), **shrink(args.steps, {a: profile[a] for a in ARMS})}
    if args.shrink:  # a CPU try: 2 prompts per step, GRPO groups of 2 with 8 new tokens (the profile's 128 x 64 take hours)
        for a in ARMS:
            sets.update({f"{a}.per_device_train_batch_size": 2, f"{a}.gradient_accumulation_steps": 1})
            if "num_generations" in defaults[a]:
                sets.update({f"{a}.per_device_train_batch_size": 4, f"{a}.num_generations": 2,
                             f"{a}.generation_batch_size": 4, f"{a}.max_completion_length": 8})
    cli = [sys.executable, "-m", "stages.cli"]
    r = subprocess.run([*cli, "profile", "apply", "study", *[x for k, v in sets.items() for x in ("-S", f"{k}={json.dumps(v)}")]],
                       cwd=project, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stdout + r.stderr)

    rows = []
    for name in STAGES:
        peak = GpuPeak()
        peak.start()
        t = time.perf_counter()
        with (root / f"{name}.log").open("w") as log:
            rc = subprocess.run([*cli, "stage", name], cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - t
        peak.stop.set()
        peak.join()
        rows.append((name, seconds, peak.peak))
        print(f"  {name}: {seconds:.1f} s, peak GPU memory {'n/a' if peak.peak is None else f'{peak.peak / 1024:.1f} GiB'}",
              flush=True)
        if rc:
            tail = "\n".join((root / f"{name}.log").read_text().splitlines()[-20:])
            raise SystemExit(f"stage {name} failed (exit {rc}); the end of {root / (name + '.log')}:\n{tail}")

    per_step = {}
    for arm in ARMS:
        m = json.loads((project / "metrics" / f"{arm}.json").read_text())
        per_step[arm] = m["seeds"]["0"]["wall_s"] / args.steps
    seeds = len(yaml.safe_load((REPO / "params.yaml").read_text())["common"]["seeds"])
    train_h = sum(per_step[a] * profile[a]["max_steps"] * seeds for a in per_step) / 3600
    n_ckpt = len(profile["sft"]["save_steps"])
    measured = {n: s for n, s, _ in rows}
    # the measurement stages measured the base and one checkpoint per arm; the profile has seeds x checkpoints each
    per_model = (measured["evaluate-forgetting"] + measured["extract-circuits"]) / (1 + len(ARMS))
    measure_h = per_model * (1 + 3 * seeds * n_ckpt) / 3600
    print("\n| stage | seconds | peak GPU memory (GiB) |\n| --- | ---: | ---: |")
    for name, seconds, peak in rows:
        print(f"| {name} | {seconds:.1f} | {'n/a' if peak is None else f'{peak / 1024:.1f}'} |")
    print("\nseconds per optimizer step (wall time of the seed over its steps, loading included): "
          + ", ".join(f"{a} {s:.2f}" for a, s in per_step.items()))
    print(f"expected for profiles/study.yaml ({seeds} seeds, {n_ckpt} checkpoints per seed): training {train_h:.1f} h, "
          f"measurement about {measure_h:.1f} h (base + 1 checkpoint per arm measured here, scaled)")
    print(f"logs and project: {root}")


if __name__ == "__main__":
    main()
