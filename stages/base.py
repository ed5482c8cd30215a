"""Stage `base`: the base model M0 every later stage starts from.

    dcv stage base [--params params.yaml]

`base.kind: toy` pretrains a Qwen2-architecture model from scratch on the prepared corpus; `base.kind: hf` loads
a Hugging Face causal LM (hub id or local dir) and records its revision and the sha256 of its weight files.
Either way it writes `models/base/` and `metrics/base.json` (capabilities on held-out validation pairs, target
accuracy and the base's letter distribution on the target eval split).
"""

from __future__ import annotations

import time

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, seed_everything, stage

PARAMS = ["base", "common.device", "common.torch_threads"]


def load_validation(ctx: StageContext) -> dict[str, list[dict]]:
    from dcv.probes import load_probes

    return {f.stem: load_probes(f) for f in sorted(ctx.layout.prepared("validation").glob("*.jsonl"))}


def evaluate(model, tok, validation: dict[str, list[dict]], target_eval: list[dict]) -> dict:
    from dcv.probes import evaluate_probes
    from dcv.target_eval import greedy_completions, score_target

    caps = {c: evaluate_probes(model, tok, rows, where=f"data/prepared/validation/{c}.jsonl")
            for c, rows in validation.items()}
    target = score_target(target_eval, greedy_completions(model, tok, [r["prompt"] for r in target_eval]))
    return {"capabilities": caps, "target_accuracy": target["accuracy"],
            "target_letter_distribution": target["letter_distribution"]}


def pretrain_toy(ctx: StageContext, validation, target_eval):
    import torch

    from dcv.toy.pretrain import build_model, encode_corpus, pretrain
    from dcv.toy.tokenizer import load_tokenizer

    p = ctx.params.base
    tok = load_tokenizer(ctx.layout.prepared("tokenizer"))
    lines = (ctx.layout.prepared("corpus") / "train.txt").read_text(encoding="utf-8").splitlines()
    model = build_model(p.model, len(tok), tok, p.seed)
    ids, lengths = encode_corpus(lines, tok, p.model.max_position_embeddings)

    def on_eval(step: int) -> None:
        m = evaluate(model, tok, validation, target_eval)
        curve = {f"capabilities.{c}.accuracy": v["accuracy"] for c, v in m["capabilities"].items()}
        curve["capabilities.mean_accuracy"] = sum(v["accuracy"] for v in m["capabilities"].values()) / len(validation)
        curve["target_accuracy"] = m["target_accuracy"]
        ctx.run.log_step(step, curve)

    with torch.enable_grad():
        pretrain(model, ids, lengths, p.train, p.seed, on_log=ctx.run.log_step, on_eval=on_eval)
    source = {"kind": "toy", "tokenizer": "word-level", "params": p.model.model_dump(),
              "n_params": sum(x.numel() for x in model.parameters())}
    return model, tok, source


def load_hf(ctx: StageContext):
    from dcv.models import load_model, resolve_hf, weight_hashes

    h = ctx.params.base.hf
    try:
        local, commit = resolve_hf(h.model, h.revision)
    except DcvError as e:
        raise DcvError(f"{ctx.params_path}: base.hf.model: {e}") from None
    model, tok = load_model(local, ctx.params.common.device, h.dtype, h.trust_remote_code)
    source = {"kind": "hf", "tokenizer": "auto", "model": h.model, "revision": h.revision, "commit": commit,
              "weights_sha256": weight_hashes(local), "n_params": sum(x.numel() for x in model.parameters())}
    return model, tok, source


def run(ctx: StageContext) -> dict:
    from dcv.io import read_jsonl
    from dcv.models import resolve_device, save_model

    t0 = time.perf_counter()
    p = ctx.params.base
    seed_everything(p.seed, ctx.params.common.torch_threads)
    validation = load_validation(ctx)
    target_eval = read_jsonl(ctx.layout.target_file("eval"))
    if p.kind == "toy":
        model, tok, source = pretrain_toy(ctx, validation, target_eval)
        model.to(resolve_device(ctx.params.common.device))
    else:
        model, tok, source = load_hf(ctx)
    metrics = evaluate(model, tok, validation, target_eval)
    metrics["n_params"] = source["n_params"]
    with io.atomic_dir(ctx.layout.base_model) as d:
        save_model(model.to("cpu") if p.kind == "toy" else model, tok, d, source)
    return ctx.finish(metrics, t0, ctx.layout.metrics("base"), [(ctx.layout.base_model, "model")])


def main(params: str) -> None:
    with stage("base", params, PARAMS) as ctx:
        run(ctx)
