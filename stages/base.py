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
from stages.context import StageContext, seed_everything, stage, stage_params

PARAMS = ["base", "common.device", "common.torch_threads"]


def load_validation(layout) -> dict[str, list[dict]]:
    from dcv.probes import load_probes

    files = sorted(layout.prepared("validation").glob("*.jsonl"))
    if not files:
        raise DcvError(f"{layout.prepared('validation')}: no validation sets (*.jsonl; run stage prepare-data)")
    return {f.stem: load_probes(f) for f in files}


def load_target_eval(path) -> list[dict]:
    """The target eval rows; a row without a prompt or answer is an error naming file and line."""
    from dcv.io import read_jsonl

    rows = read_jsonl(path)
    if not rows:
        raise DcvError(f"{path}: empty split (no rows)")
    lines = [i for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1) if line.strip()]
    for n, r in zip(lines, rows):
        if not isinstance(r.get("prompt"), str) or not r["prompt"].strip() or not isinstance(r.get("answer"), str):
            raise DcvError(f"{path}:{n}: target row needs a non-empty string 'prompt' and a string 'answer'")
    return rows


def check_corpus_fits(tok, lines: list[str], max_len: int, where: str, note: str = "") -> None:
    """Every corpus line, with <bos> and <eos>, fits the model's positions; the error names the key and the line
    (`where`:<line>, then `note`)."""
    lens = [len(x) + 1 for x in tok(lines, add_special_tokens=True)["input_ids"]]  # + <eos>
    longest = max(range(len(lens)), key=lens.__getitem__)
    if lens[longest] > max_len:
        n_over = sum(n > max_len for n in lens)
        raise DcvError(f"base.model.max_position_embeddings: {max_len}, but {where}:{longest + 1}{note} has "
                       f"{lens[longest]} tokens with <bos> and <eos> ({n_over} of {len(lines)} lines are longer)")


def load_inputs(layout, p, where: str) -> dict:
    """Every input of the stage, read and checked before the MLflow run opens (errors name file and line, or the
    params key): validation sets, target eval rows, and the corpus encoded (toy) or the model resolved (hf)."""
    inputs = {"validation": load_validation(layout), "target_eval": load_target_eval(layout.target_file("eval"))}
    if p.kind == "toy":
        from dcv.toy.pretrain import encode_corpus
        from dcv.toy.tokenizer import load_tokenizer

        tdir = layout.prepared("tokenizer")
        if not (tdir / "tokenizer.json").is_file():
            raise DcvError(f"{tdir}: no tokenizer.json (run stage prepare-data)")
        try:
            tok = load_tokenizer(tdir)
        except Exception as e:  # noqa: BLE001  (a damaged tokenizer.json fails in many ways)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DcvError(f"{tdir / 'tokenizer.json'}: cannot load the tokenizer ({first})") from None
        corpus = layout.prepared("corpus") / "train.txt"
        if not corpus.is_file():
            raise DcvError(f"{corpus}: file not found (run stage prepare-data)")
        lines = corpus.read_text(encoding="utf-8").splitlines()
        if not lines:
            raise DcvError(f"{corpus}: empty corpus (run stage prepare-data)")
        inputs["tok"] = tok
        try:
            check_corpus_fits(tok, lines, p.model.max_position_embeddings, layout.rel(corpus))
        except DcvError as e:
            raise DcvError(f"{where}: {e}") from None
        inputs["ids"], inputs["lengths"] = encode_corpus(lines, tok, p.model.max_position_embeddings)
    else:
        from dcv.models import load_tokenizer, resolve_hf

        try:
            inputs["local"], inputs["commit"] = resolve_hf(p.hf.model, p.hf.revision)
        except DcvError as e:
            raise DcvError(f"{where}: base.hf.model: {e}") from None
        if not (inputs["local"] / "config.json").is_file():
            raise DcvError(f"{where}: base.hf.model: {p.hf.model}: not a model directory (no config.json)")
        tok = load_tokenizer(inputs["local"], p.hf.trust_remote_code)
        from dcv.probes import single_token_id

        for cap, rows in inputs["validation"].items():
            for i, r in enumerate(rows, 1):
                for k in ("answer", "distractor"):
                    try:
                        single_token_id(tok, r[k], f"{layout.rel(layout.prepared('validation'))}/{cap}.jsonl:{i}")
                    except DcvError as e:
                        raise DcvError(f"{where}: base.hf.model: its tokenizer is not data.tokenizer's: {e}") from None
    return inputs


def evaluate(model, tok, validation: dict[str, list[dict]], target_eval: list[dict]) -> dict:
    from dcv.probes import evaluate_probes
    from dcv.target_eval import greedy_completions, score_target

    caps = {c: evaluate_probes(model, tok, rows, where=f"data/prepared/validation/{c}.jsonl")
            for c, rows in validation.items()}
    from dcv.chat import rows_are_chat

    target = score_target(target_eval, greedy_completions(model, tok, [r["prompt"] for r in target_eval],
                                                          special=not rows_are_chat(target_eval)))
    return {"capabilities": caps, "target_accuracy": target["accuracy"],
            "target_letter_distribution": target["letter_distribution"]}


def pretrain_toy(ctx: StageContext, validation, target_eval, inputs: dict):
    import torch

    from dcv.toy.pretrain import build_model, pretrain

    p = ctx.params.base
    tok, ids, lengths = inputs["tok"], inputs["ids"], inputs["lengths"]
    model = build_model(p.model, len(tok), tok, p.seed)

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


def load_hf(ctx: StageContext, inputs: dict):
    from dcv.models import load_model, weight_hashes

    h = ctx.params.base.hf
    local, commit = inputs["local"], inputs["commit"]
    model, tok = load_model(local, ctx.params.common.device, h.dtype, h.trust_remote_code)
    source = {"kind": "hf", "tokenizer": "auto", "model": h.model, "revision": h.revision, "commit": commit,
              "weights_sha256": weight_hashes(local), "n_params": sum(x.numel() for x in model.parameters())}
    return model, tok, source


def run(ctx: StageContext, inputs: dict) -> dict:
    from dcv.models import resolve_device, save_model

    t0 = time.perf_counter()
    p = ctx.params.base
    seed_everything(p.seed, ctx.params.common.torch_threads)
    validation, target_eval = inputs["validation"], inputs["target_eval"]
    if p.kind == "toy":
        model, tok, source = pretrain_toy(ctx, validation, target_eval, inputs)
        model.to(resolve_device(ctx.params.common.device))
    else:
        model, tok, source = load_hf(ctx, inputs)
    metrics = evaluate(model, tok, validation, target_eval)
    metrics["n_params"] = source["n_params"]
    with io.atomic_dir(ctx.layout.base_model) as d:
        save_model(model.to("cpu") if p.kind == "toy" else model, tok, d, source)
    return ctx.finish(metrics, t0, ctx.layout.metrics("base"), [(ctx.layout.base_model, "model")])


def main(params: str) -> None:
    """Bad params, then bad inputs (a corpus line longer than the model's positions, a tokenizer that does not fit the
    probes), stop the stage before anything is written (not even the MLflow run)."""
    from dcv.layout import Layout

    p, root = stage_params(params, "base", PARAMS)
    inputs = load_inputs(Layout(root), p.base, params)
    with stage("base", params, PARAMS) as ctx:
        run(ctx, inputs)
