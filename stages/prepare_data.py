"""Stage `prepare-data`: the tokenizer and pretraining corpus (toy), the target splits, the probe splits.

    dcv stage prepare-data [--params params.yaml]

Each output is its own DVC out, written atomically, so that a stage reruns only when its own inputs change:

    data/prepared/tokenizer/     the toy world's word-level tokenizer (or the HF tokenizer, saved)
    data/prepared/corpus/        the toy base's pretraining text
    data/prepared/target/        {train,eval}.jsonl: the target task
    data/prepared/validation/    <capability>.jsonl: the base's own check (feeds stage base only)
    data/prepared/probes/        <capability>.jsonl: the scoring split (head effects of every model), and target.jsonl
    data/prepared/protection/    <capability>.jsonl: the prompts arm protect trains its penalty on
    data/prepared/discovery/     <capability>.jsonl: the base circuit C0 is chosen on these (base only), and target.jsonl
    data/prepared/forgetting/    <capability>.jsonl: accuracy and logit difference of every model

The probe splits of a capability are disjoint held-out pairs (never in the corpus), drawn in the order of
`dcv.splits.ORDER`; the metrics record, per capability, how many of a split's clean prompts another split shares
(`clean_overlap`: a capability with few distinct prompts cannot avoid it).

The target task's own pairs (capability `TARGET`, `dcv.target_pairs`, kinds `data.target_pairs.kinds`) are built
from the target eval rows, one per row, and go into the scoring and discovery splits only: target accuracy is
measured on the eval rows themselves, and forgetting is of the prior capabilities only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dcv import io
from dcv import splits as sp
from dcv.errors import DcvError
from dcv.splits import TARGET, TARGET_SPLITS
from dcv.target_sources import SOURCES as TARGET_SOURCES
from stages.context import StageContext, stage, stage_params

PARAMS = ["data"]


def check_single_tokens(tok, probe_sets: dict, p, where: str, split: str) -> None:
    """Every answer and distractor must be exactly one token of the tokenizer in use (a toy-world probe set read
    with another tokenizer fails here; `templates` keep only the pairs that pass)."""
    from dcv.probes import single_token_id

    hint = "" if p.probes.source == "templates" else "; data.probes.source: templates builds pairs for this tokenizer"
    for cap, rows in probe_sets.items():
        for i, r in enumerate(rows, 1):
            for k in ("answer", "distractor"):
                try:
                    single_token_id(tok, r[k], f"capability {cap}, {split} pair {i} {k}")
                except DcvError as e:
                    raise DcvError(f"{where}: data.tokenizer {p.tokenizer}: {e}{hint}") from None


# Most of a prompt's tokens unknown to the tokenizer (a word-level vocabulary of the toy world on SciKnowEval text)
# means the models would read `<unk>` where the question was: refused above this share of the target prompt tokens.
UNK_MAX = 0.05


@dataclass
class Prepared:
    """What prepare-data writes, computed (and checked) before its MLflow run opens."""

    world: object  # dcv.toy.world.World
    tok: object
    splits: dict[str, dict[str, list[dict]]]  # split -> capability -> probe rows
    train: list[dict]
    eval: list[dict]
    kept: dict | None = None  # per capability: candidates, kept, dropped by reason (sources that filter)
    target_pairs: dict[str, list[dict]] | None = None  # split (probes, discovery) -> target pairs; None: no kinds
    target_kept: dict | None = None  # per pair kind: candidates (rows), kept, dropped by reason


def target_rows(t, root: Path, world, where: str, tok=None) -> tuple[list[dict], list[dict]]:
    """Target train/eval rows of `data.target` (`t`); errors name the key or the file and line. With
    `data.target.chat` every prompt is rendered with `tok`'s chat template (`dcv.chat.chat_row`)."""
    train, eval_ = _source_rows(t, root, world, where)
    if not t.chat:
        return train, eval_
    from dcv.chat import chat_row

    at = f"{where}: data.target.chat"
    return [chat_row(tok, r, t.system, at) for r in train], [chat_row(tok, r, t.system, at) for r in eval_]


def _source_rows(t, root: Path, world, where: str) -> tuple[list[dict], list[dict]]:
    """The rows of the registered target source `data.target.source` (dcv.target_sources)."""
    from stages.params import target_key

    try:
        return TARGET_SOURCES[t.source].rows(t.spec(root), world, world.cfg.seed)
    except ValueError as e:
        key, msg = target_key(e)
        raise DcvError(f"{where}: {key}: {msg}") from None
    except DcvError as e:
        if str(e).startswith("data.target"):  # a params key, not a file: say which params file
            raise DcvError(f"{where}: {e}") from None
        raise


def tokenizer(name: str, words: set[str], where: str, resolve=None):
    """The toy world's word-level tokenizer, or the Hugging Face one named by `data.tokenizer` (`resolve(ref)`: its
    local directory, default `dcv.models.resolve_hf`)."""
    if name == "toy":
        from dcv.toy.tokenizer import build_tokenizer

        return build_tokenizer(words)
    from dcv.models import load_tokenizer, resolve_hf

    try:
        local = resolve(name) if resolve else resolve_hf(name, None)[0]
    except DcvError as e:
        raise DcvError(f"{where}: data.tokenizer: {e}") from None
    try:
        return load_tokenizer(local)
    except Exception as e:  # noqa: BLE001  (a directory without a tokenizer fails in many ways)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DcvError(f"{where}: data.tokenizer: {name}: cannot load a tokenizer from {local} ({first})") from None


def probe_sets(world, tok, p, where: str) -> tuple[dict, dict | None]:
    """The probe splits from the registered source `data.probes.source`, and its kept/dropped counts (None for the
    toy world). A split that asks more held-out pairs than a capability has is named by its key: splits are drawn
    in order, each depending only on those before it, so after a failing draw, drawing one more split at a time
    names the first that fails."""
    from dcv.probe_sources import source

    src = source(p.probes.source)
    keys = {sp.VALIDATION: "data.n_validation", sp.SCORING: "data.probes.n_pairs",
            sp.PROTECTION: "data.probes.n_protection", sp.DISCOVERY: "data.probes.n_discovery",
            sp.FORGETTING: "data.probes.n_forgetting"}
    sizes = {sp.VALIDATION: p.n_validation, sp.SCORING: p.probes.n_pairs, sp.PROTECTION: p.probes.n_protection,
             sp.DISCOVERY: p.probes.n_discovery, sp.FORGETTING: p.probes.n_forgetting}
    try:
        return src.build(tok, world, p.capabilities, {k: sizes[k] for k in sp.ORDER}, p.world.seed)
    except ValueError:
        pass
    for i, split in enumerate(sp.ORDER):
        try:
            src.build(tok, world, p.capabilities, {k: sizes[k] for k in sp.ORDER[: i + 1]}, p.world.seed)
        except ValueError as e:
            raise DcvError(f"{where}: {keys[split]}: {e} (the splits {', '.join(keys[s] for s in sp.ORDER)} are "
                           f"disjoint, drawn in this order)") from None
    raise AssertionError("unreachable: the full draw failed, so one of its prefixes does")


def check_known_tokens(tok, rows: list[dict], name: str, files: str) -> None:
    """The target prompts must be readable by the tokenizer: at most UNK_MAX of their tokens `<unk>` (per file of
    rows, `subset`; `files` names where the rows come from)."""
    if tok.unk_token_id is None or not rows:
        return  # byte-level tokenizers have no unknown token
    by_subset: dict[str, list[str]] = {}
    for r in rows:
        by_subset.setdefault(r.get("subset") or "", []).append(r["prompt"])
    for subset, prompts in sorted(by_subset.items()):
        ids = tok(prompts, add_special_tokens=False)["input_ids"]
        n = sum(len(x) for x in ids)
        unk = sum(x.count(tok.unk_token_id) for x in ids)
        if n and unk / n > UNK_MAX:
            where = f"{files}/{subset}.jsonl" if subset else files
            raise DcvError(f"{where}: {unk / n:.0%} of the target prompt tokens are unknown to data.tokenizer "
                           f"{name} ({unk} of {n} are {tok.unk_token}; at most {UNK_MAX:.0%}): data.tokenizer must "
                           f"be the model's tokenizer")


def target_pairs(p, tok, eval_: list[dict], world, where: str) -> tuple[dict[str, list[dict]] | None, dict]:
    """The target task's probe pairs (`data.target_pairs`) from the eval rows: split -> pairs (None when no kinds
    are asked), and the counts per kind. Errors name the params key: a kind the target cannot serve
    (`kinds`: entity_swap without the toy world), too few kept pairs (`n_pairs` or `n_discovery`, the first split
    that cannot be filled; the scoring split is drawn first)."""
    from dcv.target_pairs import TooFewPairs, build_target_pairs

    t = p.target_pairs
    sizes = {sp.SCORING: t.n_pairs, sp.DISCOVERY: t.n_discovery}
    assert tuple(sizes) == TARGET_SPLITS
    keys = {sp.SCORING: "data.target_pairs.n_pairs", sp.DISCOVERY: "data.target_pairs.n_discovery"}
    try:
        pairs, counts = build_target_pairs(tok, eval_, list(t.kinds), sizes, p.world.seed,
                                           world if TARGET_SOURCES[p.target.source].toy else None)
    except TooFewPairs as e:
        raise DcvError(f"{where}: {keys[e.split]}: {e} (lower data.target_pairs.n_pairs / n_discovery, or raise "
                       f"data.target.n_eval)") from None
    except ValueError as e:
        raise DcvError(f"{where}: data.target_pairs.kinds: {e}") from None
    return (pairs if t.kinds else None), counts


def prepare(p, root: Path, where: str, resolve=None) -> Prepared:
    """Everything prepare-data computes that can fail, from the `data` params (`p`) and the files they name; every
    error names the params file and key, or the data file and line. Cheap: no corpus, no model. `resolve`: how a
    Hugging Face tokenizer id becomes a directory (`dcv check` passes one that never downloads weights)."""
    from dcv.toy.corpus import capabilities
    from dcv.toy.world import World

    world = World.build(p.world)
    words: set[str] = set()
    for cap in capabilities(world).values():
        words |= cap.words()
    tok = tokenizer(p.tokenizer, words, where, resolve)
    sets, counts = probe_sets(world, tok, p, where)
    splits = {split: {c: [x.to_json() for x in s[split]] for c, s in sets.items()} for split in sp.ORDER}
    for split, rows in splits.items():
        check_single_tokens(tok, rows, p, where, split)
    train, eval_ = target_rows(p.target, root, world, where, tok)
    if not train or not eval_:
        raise DcvError(f"{where}: data.target: a split is empty (train {len(train)}, eval {len(eval_)})")
    check_known_tokens(tok, train + eval_, p.tokenizer, TARGET_SOURCES[p.target.source].label(p.target.spec(root)))
    tpairs, tkept = target_pairs(p, tok, eval_, world, where)
    return Prepared(world, tok, splits, train, eval_, counts, tpairs, tkept)


def run(ctx: StageContext, prep: Prepared) -> dict:
    from dcv.toy.corpus import build_corpus

    p = ctx.params.data
    lay = ctx.layout
    tok, splits, train, eval_ = prep.tok, prep.splits, prep.train, prep.eval

    # Everything is computed; now write each out atomically.
    # The corpus is the toy world's pretraining text; a Hugging Face base ignores it.
    with io.atomic_dir(lay.prepared("tokenizer")) as d:
        tok.save_pretrained(str(d))
        if p.tokenizer == "toy":
            (d / "dcv_model.json").write_text('{"tokenizer": "word-level"}\n')
    corpus = build_corpus(prep.world, p.corpus)
    with io.atomic_dir(lay.prepared("corpus")) as d:
        (d / "train.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    with io.atomic_dir(lay.prepared("target")) as d:
        io.write_jsonl(d / "train.jsonl", train)
        io.write_jsonl(d / "eval.jsonl", eval_)
    for split, rows_by_cap in splits.items():
        with io.atomic_dir(lay.prepared(split)) as d:
            for cap, rows in rows_by_cap.items():
                io.write_jsonl(d / f"{cap}.jsonl", rows)
            if prep.target_pairs is not None and split in prep.target_pairs:
                io.write_jsonl(d / f"{TARGET}.jsonl", prep.target_pairs[split])
    overlap = {c: {f"{a}/{b}": round(sp.clean_overlap({x: splits[x][c] for x in sp.ORDER}, a, b), 6)
                   for a, b in ((sp.DISCOVERY, sp.SCORING), (sp.SCORING, sp.FORGETTING), (sp.DISCOVERY, sp.FORGETTING))}
               for c in p.capabilities}
    metrics = {"vocab_size": len(tok), "target": {"n_train": len(train), "n_eval": len(eval_)},
               "pairs": {split: {c: len(r) for c, r in rows.items()} for split, rows in splits.items()},
               "clean_overlap": overlap, "probe_source": p.probes.source,
               # the target task's own pairs, apart from `pairs` (prior capabilities only)
               "target_pairs": {"kinds": list(p.target_pairs.kinds),
                                "pairs": {s: len((prep.target_pairs or {}).get(s, [])) for s in TARGET_SPLITS},
                                "kept": prep.target_kept or {}}}
    if prep.kept is not None:
        metrics["kept"] = prep.kept
    io.write_json(lay.metrics("prepare-data"), metrics)
    ctx.run.log_final(metrics)
    examples = {c: rows[:5] for c, rows in splits[sp.SCORING].items()}
    if prep.target_pairs is not None:
        examples[TARGET] = prep.target_pairs[sp.SCORING][:5]
    ctx.run.log_dict(examples, "probe_examples.json")
    return metrics


def main(params: str) -> None:
    """Bad params, then what they imply (the tokenizer, the probe counts, the target rows), stop the stage before
    anything is written (not even the MLflow run)."""
    p, root = stage_params(params, "prepare-data", PARAMS)
    prep = prepare(p.data, root, params)
    with stage("prepare-data", params, PARAMS) as ctx:
        run(ctx, prep)
