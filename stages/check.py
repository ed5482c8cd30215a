"""`dcv check`: everything a stage of the pipeline would refuse, found from params.yaml before anything runs.

    dcv check [--params params.yaml]

`make run` calls it before `dvc repro`, because DVC removes a stage's outs before the stage can look at its params.
It checks what every stage checks before its MLflow run opens, on the inputs the params imply (a fresh clone has
no prepared files yet): the schema and the cross-field rules (`stages.params`), the tracking store (without
creating it), the tokenizer and the probe splits and target rows prepare-data would write, the toy corpus against
the model's positions, every arm's sequences against its `max_length` and its LoRA modules against the base
model (built on the meta device), lm-eval's task directory. It writes nothing, downloads no weights (a hub id not
in the local cache: only its tokenizer and config files, and only when online) and prints one line per stage.

Not checked here (they need what earlier stages produce, and each stage checks them itself before its run opens):
the files of a previous run, checkpoints, circuits and measurements.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from dcv.errors import DcvError

# Enough of a hub repository to read its tokenizer and its architecture.
SMALL_FILES = ["*.json", "*.txt", "*.model", "*.tiktoken", "*.py"]


def local_ref(ref: str, revision: str | None, key: str, where: str) -> Path:
    """A directory holding `ref`'s tokenizer and config: a local directory, the local hub cache, or (online, not
    cached) a download of its small files only."""
    p = Path(ref).expanduser()
    if p.is_dir():
        return p
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref, revision=revision, local_files_only=True))
    except Exception as e:  # noqa: BLE001
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DcvError(f"{where}: {key}: cannot resolve {ref!r} (revision {revision}) as a local directory or a "
                           f"cached hub id (HF_HUB_OFFLINE=1): {first}") from None
    try:
        return Path(snapshot_download(ref, revision=revision, allow_patterns=SMALL_FILES))
    except Exception as e:  # noqa: BLE001  (hub errors have many types)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DcvError(f"{where}: {key}: cannot resolve {ref!r} (revision {revision}) on the hub: {first}") from None


def toy_meta_model(p, tok):
    """The toy base as stage base builds it, on the meta device."""
    import torch

    from dcv.toy.pretrain import build_model

    with torch.device("meta"):
        return build_model(p.base.model, len(tok), tok, p.base.seed)


def _target_pairs_line(prep) -> str:
    if prep.target_pairs is None:
        return "none (data.target_pairs.kinds is empty)"
    return " + ".join(f"{len(v)} {k}" for k, v in prep.target_pairs.items())


def check(params_path: str | Path) -> list[str]:
    """Every up-front check of every stage; returns one line per stage checked, raises DcvError at the first
    problem (the message names the file and key, or the data file and line)."""
    from dcv.arms import REGISTRY as ARMS
    from dcv.models import resolve_device
    from dcv.tracking import check_store
    from stages import arms, base, evaluate_forgetting, prepare_data
    from stages.params import load_params

    where = str(params_path)
    p = load_params(params_path)
    root = Path(params_path).resolve().parent
    done = [f"{where}: every section and key, types, ranges and cross-field rules"]
    done.append(f"tracking store: {check_store(root)}")

    prep = prepare_data.prepare(p.data, root, where,
                                resolve=lambda ref: local_ref(ref, None, "data.tokenizer", where))
    done.append(f"prepare-data: tokenizer {p.data.tokenizer} ({len(prep.tok)} tokens), probe splits of "
                f"{len(prep.splits['probes'])} capabilities, {len(prep.train)} + {len(prep.eval)} target rows, "
                f"target pairs {_target_pairs_line(prep)}")

    if p.base.kind == "toy":
        from dcv.toy.corpus import build_corpus

        lines = build_corpus(prep.world, p.data.corpus)
        try:
            base.check_corpus_fits(prep.tok, lines, p.base.model.max_position_embeddings,
                                   "data/prepared/corpus/train.txt", " (as prepare-data writes it)")
        except DcvError as e:
            raise DcvError(f"{where}: {e}") from None
        tok = prep.tok
        model = lambda: toy_meta_model(p, prep.tok)  # noqa: E731  (built only when an arm uses LoRA)
        done.append(f"base: toy model {p.base.model.hidden_size} x {p.base.model.num_hidden_layers} layers, "
                    f"{len(lines)} corpus lines fit {p.base.model.max_position_embeddings} positions")
    else:
        from transformers import AutoConfig

        from dcv.models import load_tokenizer

        local = local_ref(p.base.hf.model, p.base.hf.revision, "base.hf.model", where)
        if not (local / "config.json").is_file():
            raise DcvError(f"{where}: base.hf.model: {p.base.hf.model}: not a model directory (no config.json)")
        tok = load_tokenizer(local, p.base.hf.trust_remote_code)
        if tok.get_vocab() != prep.tok.get_vocab():
            raise DcvError(f"{where}: base.hf.model: its tokenizer ({len(tok)} tokens) is not data.tokenizer "
                           f"{p.data.tokenizer} ({len(prep.tok)} tokens), which the probes and target rows were "
                           f"checked against: name the model's tokenizer")
        model = lambda: arms.meta_model(AutoConfig.from_pretrained(str(local), trust_remote_code=p.base.hf.trust_remote_code))  # noqa: E731
        done.append(f"base: {p.base.hf.model} ({local})")

    built = None
    for name in ARMS:  # every arm's stage runs under dvc repro, whether or not common.arms compares it
        cfg = getattr(p, name)
        try:
            arms.check_fits(tok, prep.train, cfg, name, "data/prepared/target/train.jsonl (as prepare-data writes it)")
            arms.check_generation(cfg, name, resolve_device(p.common.device))
            if cfg.finetune == "lora":
                built = built or model()
                arms.check_lora(built, cfg, name)
        except DcvError as e:
            raise DcvError(f"{where}: {e}") from None
        start = "" if cfg.init == "base" else f", from {cfg.init} step {cfg.init_step or 'final'}"
        done.append(f"{name}: {cfg.max_steps} steps{start}, checkpoints {cfg.checkpoint_steps()}, finetune {cfg.finetune}")

    evaluate_forgetting.check_lm_eval(p.forgetting.lm_eval, root, where)
    done.append("evaluate-forgetting, extract-circuits, score-dcv, report: their params (inputs: checked by each "
                "stage before it runs)")
    return done


def main(params: str) -> None:
    for line in check(params):
        typer.echo(f"ok: {line}")
