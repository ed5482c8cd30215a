"""Stage `prepare-data`: the tokenizer and pretraining corpus (toy), the target splits, one probe file per capability.

    dcv stage prepare-data [--params params.yaml]

Each output is its own DVC out, written atomically, so that `base` reruns only when its own inputs change: the
probe sets used downstream (`data/prepared/probes/`) are separate from the base's validation sets.
"""

from __future__ import annotations

from pathlib import Path

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, stage

SECTIONS = ["data"]
OUT = "data/prepared"


def check_single_tokens(tok, probe_sets: dict, tokenizer_name: str) -> None:
    """Every answer and distractor must be exactly one token of the tokenizer in use."""
    from dcv.probes import single_token_id

    for cap, rows in probe_sets.items():
        for i, r in enumerate(rows, 1):
            for k in ("answer", "distractor"):
                single_token_id(tok, r[k], f"capability {cap} (tokenizer {tokenizer_name}), pair {i} {k}")


def target_rows(ctx: StageContext, world) -> tuple[list[dict], list[dict]]:
    t = ctx.params.data.target
    if t.source == "toy":
        from dcv.toy.target import make_rows

        return make_rows(world, t.n_train, t.n_eval)
    from dcv.sciknoweval import load_split

    path = Path(t.path) if Path(t.path).is_absolute() else ctx.root / t.path
    return load_split(path, t.subsets, t.n_eval, seed=ctx.params.data.world.seed)


def run(ctx: StageContext) -> dict:
    from dcv.toy.corpus import build_corpus, build_probe_sets, capabilities
    from dcv.toy.tokenizer import build_tokenizer
    from dcv.toy.world import World

    p = ctx.params.data
    out = ctx.path(OUT)
    world = World.build(p.world)
    words: set[str] = set()
    for cap in capabilities(world).values():
        words |= cap.words()
    if p.tokenizer == "toy":
        tok = build_tokenizer(words)
    else:
        from dcv.models import load_tokenizer, resolve_hf

        tok = load_tokenizer(resolve_hf(p.tokenizer, None)[0])
    try:
        sets = build_probe_sets(world, p.capabilities, p.n_validation, p.probes.n_pairs)
    except ValueError as e:
        raise DcvError(f"{ctx.params_path}: data.probes.n_pairs / data.n_validation: {e}") from None
    validation = {c: [x.to_json() for x in v] for c, (v, _) in sets.items()}
    probes = {c: [x.to_json() for x in pr] for c, (_, pr) in sets.items()}
    check_single_tokens(tok, {**validation, **probes}, p.tokenizer)
    train, eval_ = target_rows(ctx, world)
    if not train or not eval_:
        raise DcvError(f"{ctx.params_path}: data.target: a split is empty (train {len(train)}, eval {len(eval_)})")

    # Everything is computed; now write each out atomically.
    # The corpus is the toy world's pretraining text; a Hugging Face base ignores it.
    with io.atomic_dir(out / "tokenizer") as d:
        tok.save_pretrained(str(d))
        if p.tokenizer == "toy":
            (d / "dcv_model.json").write_text('{"tokenizer": "word-level"}\n')
    corpus = build_corpus(world, p.corpus)
    with io.atomic_dir(out / "corpus") as d:
        (d / "train.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    with io.atomic_dir(out / "target") as d:
        io.write_jsonl(d / "train.jsonl", train)
        io.write_jsonl(d / "eval.jsonl", eval_)
    for name, sets_ in (("validation", validation), ("probes", probes)):
        with io.atomic_dir(out / name) as d:
            for cap, rows in sets_.items():
                io.write_jsonl(d / f"{cap}.jsonl", rows)
    metrics = {"vocab_size": len(tok), "target": {"n_train": len(train), "n_eval": len(eval_)},
               "probes": {c: len(r) for c, r in probes.items()}}
    io.write_json(ctx.path("metrics/prepare-data.json"), metrics)
    ctx.run.log_final(metrics)
    ctx.run.log_dict({c: rows[:5] for c, rows in probes.items()}, "probe_examples.json")
    return metrics


def main(params: str) -> None:
    with stage("prepare-data", params, SECTIONS) as ctx:
        run(ctx)
