"""Stage `prepare-data`: the tokenizer and pretraining corpus (toy), the target splits, the probe splits.

    dcv stage prepare-data [--params params.yaml]

Each output is its own DVC out, written atomically, so that a stage reruns only when its own inputs change:

    data/prepared/tokenizer/     the toy world's word-level tokenizer (or the HF tokenizer, saved)
    data/prepared/corpus/        the toy base's pretraining text
    data/prepared/target/        {train,eval}.jsonl: the target task
    data/prepared/validation/    <capability>.jsonl: the base's own check (feeds stage base only)
    data/prepared/probes/        <capability>.jsonl: the scoring split (head effects of every model)
    data/prepared/protection/    <capability>.jsonl: the prompts arm protect trains its penalty on
    data/prepared/discovery/     <capability>.jsonl: the base circuit C0 is chosen on these (base only)
    data/prepared/forgetting/    <capability>.jsonl: accuracy and logit difference of every model

The probe splits of a capability are disjoint held-out pairs (never in the corpus), drawn in the order of
`dcv.splits.ORDER`; the metrics record, per capability, how many of a split's clean prompts another split shares
(`clean_overlap`: a capability with few distinct prompts cannot avoid it).
"""

from __future__ import annotations

from pathlib import Path

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, stage

PARAMS = ["data"]


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
    from dcv import splits as sp
    from dcv.toy.corpus import build_corpus, build_probe_sets, capabilities
    from dcv.toy.tokenizer import build_tokenizer
    from dcv.toy.world import World

    p = ctx.params.data
    lay = ctx.layout
    world = World.build(p.world)
    words: set[str] = set()
    for cap in capabilities(world).values():
        words |= cap.words()
    if p.tokenizer == "toy":
        tok = build_tokenizer(words)
    else:
        from dcv.models import load_tokenizer, resolve_hf

        try:
            tok = load_tokenizer(resolve_hf(p.tokenizer, None)[0])
        except DcvError as e:
            raise DcvError(f"{ctx.params_path}: data.tokenizer: {e}") from None
    n = {sp.VALIDATION: p.n_validation, sp.SCORING: p.probes.n_pairs, sp.PROTECTION: p.probes.n_protection,
         sp.DISCOVERY: p.probes.n_discovery, sp.FORGETTING: p.probes.n_forgetting}
    sizes = {split: n[split] for split in sp.ORDER}
    try:
        sets = build_probe_sets(world, p.capabilities, sizes)
    except ValueError as e:
        raise DcvError(f"{ctx.params_path}: data.probes / data.n_validation: {e}") from None
    splits = {split: {c: [x.to_json() for x in s[split]] for c, s in sets.items()} for split in sp.ORDER}
    for rows in splits.values():
        check_single_tokens(tok, rows, p.tokenizer)
    train, eval_ = target_rows(ctx, world)
    if not train or not eval_:
        raise DcvError(f"{ctx.params_path}: data.target: a split is empty (train {len(train)}, eval {len(eval_)})")

    # Everything is computed; now write each out atomically.
    # The corpus is the toy world's pretraining text; a Hugging Face base ignores it.
    with io.atomic_dir(lay.prepared("tokenizer")) as d:
        tok.save_pretrained(str(d))
        if p.tokenizer == "toy":
            (d / "dcv_model.json").write_text('{"tokenizer": "word-level"}\n')
    corpus = build_corpus(world, p.corpus)
    with io.atomic_dir(lay.prepared("corpus")) as d:
        (d / "train.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    with io.atomic_dir(lay.prepared("target")) as d:
        io.write_jsonl(d / "train.jsonl", train)
        io.write_jsonl(d / "eval.jsonl", eval_)
    for split, rows_by_cap in splits.items():
        with io.atomic_dir(lay.prepared(split)) as d:
            for cap, rows in rows_by_cap.items():
                io.write_jsonl(d / f"{cap}.jsonl", rows)
    overlap = {c: {f"{a}/{b}": round(sp.clean_overlap({x: splits[x][c] for x in sp.ORDER}, a, b), 6)
                   for a, b in ((sp.DISCOVERY, sp.SCORING), (sp.SCORING, sp.FORGETTING), (sp.DISCOVERY, sp.FORGETTING))}
               for c in p.capabilities}
    metrics = {"vocab_size": len(tok), "target": {"n_train": len(train), "n_eval": len(eval_)},
               "pairs": {split: {c: len(r) for c, r in rows.items()} for split, rows in splits.items()},
               "clean_overlap": overlap}
    io.write_json(lay.metrics("prepare-data"), metrics)
    ctx.run.log_final(metrics)
    ctx.run.log_dict({c: rows[:5] for c, rows in splits[sp.SCORING].items()}, "probe_examples.json")
    return metrics


def main(params: str) -> None:
    with stage("prepare-data", params, PARAMS) as ctx:
        run(ctx)
