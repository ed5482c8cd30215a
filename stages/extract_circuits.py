"""Stage `extract-circuits`: head effects, circuits and their faithfulness for the base and every fine-tuned model.

    dcv stage extract-circuits [--params params.yaml]
    dcv stage extract-circuits --model DIR [--capability NAME ...] [--probes FILE] [--base DIR] [--out DIR]

For every capability and every model: `base` (`models/base`) and `<arm>/seed-<s>/step-<n>` for each
`models/<arm>/seed-<s>/checkpoints/step-<n>/` of the seeds in `common.seeds` (step 0 is the base; `final/` holds the
last checkpoint's weights, which is marked `"final": true`), on the scoring split
(`data/prepared/probes/<capability>.jsonl`); the base also on the discovery split (`data/prepared/discovery/`), where
score-dcv chooses the base circuit C0 (`dcv.splits`). A fine-tuned model's own and base-ranking curves are measured
at `circuits.checkpoint_sizes` sizes, its `discovery_circuit` at each size where score-dcv may choose C0 (the base's
discovery curve rises there: `dcv.circuits.faithfulness.choosable_sizes`); a capability of
`circuits.study_capabilities` gets `<capability>.json` on the base only with `study_effects: base` (fine-tuned models:
its DBM mask only). Outs:

    circuits/<model>/<capability>.json   method, per-head signed effects (mean, |e| mean, per pair), metric means,
                                         the model's own faithfulness curve, F of the base's ranking in this model
                                         (`base_circuit`), F of the base's *discovery* ranking in this model
                                         (`discovery_circuit`, on the scoring split) and cross-model effects
                                         (fine-tuned heads put into the base)
    circuits/discovery/base/<capability>.json   the base on the discovery split (its ranking and curve choose C0)
    circuits/<model>/<capability>.png    heatmap of the signed effects, layers x heads
    circuits/<model>/study/<capability>.json   for `circuits.study_capabilities`: the study's DBM head mask
                                         (dbm_* knobs, whatever `method` is; dcv.circuits.extract.study_mask): mask
                                         values and logits [layer, head], binary circuit (mask > 0.5), its size and F
    circuits/index.json                  every model id with its directory, arm, seed, step and `final`
    metrics/extract-circuits.json        per capability of the base: k80 (smallest k with F >= 0.8), f_at_k80, cpr,
                                         the validation of eap / eap-ig against exact, seconds; `study`: per study
                                         capability the base's DBM circuit size and F, seconds per model; wall_s

By hand (`--model`), one model directory (toy or Hugging Face; a hub id resolves from the local cache) is measured
on the named probe sets and written to `--out` (default `circuits-by-hand/`, never into the DVC out); a model under
this repository's `models/` is compared with `models/base` (or `--base DIR`), any other model is its own reference.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from dcv import io
from dcv.errors import DcvError
from dcv.layout import Layout, ModelRef
from dcv.splits import DISCOVERY as DISCOVERY_SPLIT
from dcv.splits import DISCOVERY_MODEL
from dcv.splits import SCORING as SCORING_SPLIT
from stages.context import StageContext, seed_everything, stage, stage_params

PARAMS = ["circuits", "common.arms", "common.seeds", "common.device", "common.torch_threads"]
PROBES = f"data/prepared/{SCORING_SPLIT}"  # the scoring split: every model
DISCOVERY = f"data/prepared/{DISCOVERY_SPLIT}"  # the discovery split: the base only
OUT_BY_HAND = "circuits-by-hand"
TARGET = 0.8  # k80 in the metrics file; score-dcv chooses the base circuit's own target (dcv.faithfulness_target)


def discover_models(root: Path, arms: list[str], seeds: list[int]) -> list[ModelRef]:
    """The base, then each listed arm's checkpoints (step > 0) for the listed seeds."""
    return Layout(root).model_refs(arms, seeds)


def load_capabilities(probes_dir: Path, names: list[str] | None = None) -> dict[str, list[dict]]:
    from dcv.probes import load_probes

    files = sorted(probes_dir.glob("*.jsonl")) if names is None else [probes_dir / f"{n}.jsonl" for n in names]
    if not files:
        raise DcvError(f"{probes_dir}: no probe sets (*.jsonl)")
    return {f.stem: load_probes(f) for f in files}


AUTO_FALLBACK = 64  # circuits.batch_size auto off CUDA


def encode(tok, caps: dict[str, list[dict]], batch_size: int | str, where: dict[str, str]) -> dict:
    """Pair batches per capability (errors name the probe file and line); `auto` (checks before a model is loaded):
    the size auto takes off CUDA."""
    from dcv.circuits.pairs import pair_batches

    size = AUTO_FALLBACK if batch_size == "auto" else batch_size
    return {c: pair_batches(tok, rows, size, where[c]) for c, rows in caps.items()}


def fitted_batch_size(model, tok, caps: dict[str, list[dict]], p, kw: dict, memory=None) -> int:
    """circuits.batch_size auto: the largest batch of pairs whose heaviest pass fits the free memory (dcv.memory),
    tried on the first model (the base) with the capability of the longest prompts: the method's effects and
    faithfulness curve, and one step of the study's DBM mask when that capability gets one."""
    from dcv.circuits.extract import extract, study_mask
    from dcv.circuits.methods import bind
    from dcv.memory import fit_batch

    length = {c: max(len(tok(r["clean"])["input_ids"]) for r in rows) for c, rows in caps.items()}
    cap = max(sorted(caps), key=length.__getitem__)
    rows = sorted(caps[cap], key=lambda r: -len(tok(r["clean"])["input_ids"]))
    dbm = bind("dbm", p, dbm_steps=1) if cap in p.study_capabilities else None

    def trial(b: int) -> None:
        batch = encode(tok, {cap: (rows * b)[:b]}, b, {cap: f"{PROBES}/{cap}.jsonl"})[cap]
        x = extract(model, batch, **kw)
        if dbm is not None:
            study_mask(x.probed, dbm, p.heads_per_forward)

    largest = max(len(r) for r in caps.values())
    return fit_batch(trial, largest, model.device, AUTO_FALLBACK, memory=memory, what="circuits.batch_size")


def write_circuit(out: Path, entry: ModelRef, cap: str, record: dict, root: Path) -> Path:
    from dcv.circuits.heatmap import record_png

    model_dir = entry.dir.relative_to(root) if entry.dir.is_relative_to(root) else entry.dir
    rec = {"model": entry.id, "model_dir": str(model_dir), "capability": cap, "final": entry.final, **record}
    path = out / entry.id / f"{cap}.json"
    io.write_json(path, rec)
    io.write_bytes(path.with_suffix(".png"), record_png(record, f"{entry.id} | {cap} | {record['method']}"))
    return path


def _load(ctx: StageContext, directory: Path, tokenizers=None):
    from dcv.models import load_model

    return load_model(directory, ctx.params.common.device, ctx.params.circuits.dtype, tokenizers=tokenizers)


def run(ctx: StageContext, caps: dict[str, list[dict]], models: list[ModelRef],
        discovery: dict[str, list[dict]] | None = None) -> dict:
    from dcv.circuits.extract import (BaseReference, extract, k_at, rounded, study_mask, validate_methods,
                                      validate_on_sample)
    from dcv.circuits.methods import bind, reference
    from dcv.circuits.patching import probe_model
    from dcv.models import TokenizerCache

    t0 = time.perf_counter()
    p, common = ctx.params.circuits, ctx.params.common
    seed_everything(common.seeds[0], common.torch_threads)
    where = {c: f"{PROBES}/{c}.jsonl" for c in caps}
    method, study_method = bind(p.method, p), bind("dbm", p)
    kw = {"method": method, "sizes": p.faithfulness_sizes, "heads_per_forward": p.heads_per_forward,
          "checkpoint_sizes": p.checkpoint_sizes}
    refs: dict[str, BaseReference] = {}
    disc: dict = {}  # capability -> the base's faithfulness curve on the discovery split
    per_cap: dict[str, dict] = {}
    study: dict[str, dict] = {}  # capability -> the base's DBM circuit and the seconds of every model's fit
    tokenizers = TokenizerCache()  # the checkpoints save the base's tokenizer again: loaded once
    with io.atomic_dir(ctx.layout.circuits) as out:
        for entry in models:
            t_model = time.perf_counter()
            model, tok = _load(ctx, entry.dir, tokenizers)
            if p.batch_size == "auto":  # chosen once, on the base, for every model
                p = p.model_copy(update={"batch_size": fitted_batch_size(model, tok, caps, p, kw)})
                print(f"extract-circuits: circuits.batch_size auto: {p.batch_size} pairs", flush=True)
            batches = encode(tok, caps, p.batch_size, where)
            if entry.is_base and discovery is not None:
                disc = discover(out, model, tok, entry, discovery, p, kw, ctx.root)
            log: dict[str, float] = {}
            for cap, b in batches.items():
                t_cap = time.perf_counter()
                if cap in p.study_capabilities and p.study_effects == "base" and not entry.is_base:
                    x = None  # the study's mask only (below): nothing downstream reads this model's effects here
                    probed = probe_model(model, b)
                else:
                    x = extract(model, b, base=refs.get(cap), **kw)
                    probed = x.probed
                    record = {**x.record, "split": SCORING_SPLIT}
                    if cap in disc:
                        record["discovery_circuit"] = order_curve(x, disc[cap], p, base=entry.is_base)
                    write_circuit(out, entry, cap, record, ctx.root)
                if cap in p.study_capabilities:
                    mask = study_mask(probed, study_method, p.heads_per_forward)
                    secs = mask.pop("seconds")  # not in the out: it must be the same bytes on a rerun
                    io.write_json(out / entry.id / "study" / f"{cap}.json",
                                  {"model": entry.id, "capability": cap, "split": SCORING_SPLIT, **mask})
                    st = study.setdefault(cap, {"seconds": []})
                    st["seconds"].append(secs)
                    if entry.is_base:
                        st.update(base_size=mask["size"], n_heads=mask["n_layers"] * mask["n_heads"], base_f=mask["f"])
                if entry.is_base:
                    refs[cap] = BaseReference(x.probed, x.curve.order)
                    k80, f80 = k_at(x.curve, TARGET)
                    per_cap[cap] = {"k80": k80, "f_at_k80": rounded(f80), "n_heads": x.probed.shape[0] * x.probed.shape[1],
                                    "cpr": x.record["faithfulness"]["cpr"], "seconds": round(time.perf_counter() - t_cap, 3)}
                    if cap in disc:
                        per_cap[cap]["k80_discovery"] = k_at(disc[cap], TARGET)[0]
                    if p.validate_methods and p.validate_heads is not None:
                        per_cap[cap].update(validate_on_sample(x.probed, p.validate_heads, k80 or 1, p))
                    elif p.validate_methods:
                        ref = x.effects if method.method.reference else reference(p)(model, b, probed=x.probed)
                        per_cap[cap].update(validate_methods(x.probed, ref, k80 or 1, p))
                elif x is not None:
                    bc = x.record["base_circuit"]
                    k80 = per_cap[cap]["k80"]
                    log[f"{entry.arm}/seed-{entry.seed}/{cap}/cpr"] = x.record["faithfulness"]["cpr"]
                    if k80 is not None and k80 in bc["k"]:
                        log[f"{entry.arm}/seed-{entry.seed}/{cap}/base_circuit_f_at_k80"] = bc["f"][bc["k"].index(k80)]
            if not entry.is_base:
                ctx.run.log_step(entry.step, log)
            model = x = probed = None  # free the model before the next loads: the last Extraction holds it and its caches too
            print(f"extract-circuits: {entry.id}: {len(caps)} capabilities, {time.perf_counter() - t_model:.1f} s", flush=True)
        index = {e.id: {"model_dir": ctx.layout.rel(e.dir), "arm": e.arm, "seed": e.seed, "step": e.step,
                        "final": e.final} for e in models}
        io.write_json(out / "index.json", {"method": p.method, "capabilities": sorted(caps), "models": index,
                                           "discovery": DISCOVERY_MODEL if disc else None,
                                           "study_capabilities": sorted(study)})
    metrics = {"method": p.method, "steps": method.steps, "n_models": len(models), "batch_size": p.batch_size,
               "capabilities": per_cap,
               "study": {c: {**{k: v for k, v in st.items() if k != "seconds"}, "method": "dbm", "steps": study_method.steps,
                             "seconds_per_model": round(sum(st["seconds"]) / len(st["seconds"]), 3)}
                         for c, st in study.items()}}
    return ctx.finish(metrics, t0, ctx.layout.metrics("extract-circuits"), [(ctx.layout.circuits, "circuits")])


def check_inputs(root: Path, arms: list[str], seeds: list[int], batch_size: int,
                 study_caps: list[str] = ()) -> tuple[dict, list[ModelRef], dict]:
    """Probe sets (scoring and discovery splits), models and tokenisation checked before the MLflow run opens
    (errors name file and line)."""
    from dcv.models import load_tokenizer

    caps = load_capabilities(root / PROBES)
    absent = [c for c in study_caps if c not in caps]
    if absent:
        raise DcvError(f"{root / PROBES}: no probe set {', '.join(f'{c}.jsonl' for c in absent)} of "
                       f"circuits.study_capabilities (rerun stage prepare-data)")
    missing = [c for c in sorted(caps) if not (root / DISCOVERY / f"{c}.jsonl").is_file()]
    if missing:
        raise DcvError(f"{root / DISCOVERY}: no discovery split of {', '.join(missing)} (rerun stage prepare-data: "
                       f"the base circuit is chosen on it)")
    disc = load_capabilities(root / DISCOVERY, sorted(caps))
    models = discover_models(root, arms, seeds)
    tok = load_tokenizer(Layout(root).base_model)
    encode(tok, caps, batch_size, {c: f"{PROBES}/{c}.jsonl" for c in caps})
    encode(tok, disc, batch_size, {c: f"{DISCOVERY}/{c}.jsonl" for c in disc})
    return caps, models, disc


# ---- the splits: C0 is chosen on the discovery split, every model is scored on the scoring split ------------------

def discover(out: Path, model, tok, entry: ModelRef, caps: dict[str, list[dict]], p, kw: dict, root: Path) -> dict:
    """The base on the discovery split: written to circuits/discovery/base/<cap>.json; returns each capability's
    faithfulness curve there (its ranking's top-k is C0)."""
    from dcv.circuits.extract import extract

    ref = ModelRef(DISCOVERY_MODEL, entry.dir)
    curves = {}
    for cap, b in encode(tok, caps, p.batch_size, {c: f"{DISCOVERY}/{c}.jsonl" for c in caps}).items():
        x = extract(model, b, **kw)
        write_circuit(out, ref, cap, {**x.record, "split": DISCOVERY_SPLIT}, root)
        curves[cap] = x.curve
    return curves


def order_curve(x, disc, p, base: bool) -> dict:
    """F of the top-k heads of the base's discovery ranking (curve `disc`) in the model of extraction `x`, on its
    own (scoring) pairs: {k, f, cpr, order}. The base: at every size of `faithfulness_sizes`. Another model: at the
    sizes score-dcv can choose C0 at from `disc` for any `dcv.faithfulness_target` (`choosable_sizes`), the only
    ones it reads there (about half of them)."""
    from dcv.circuits.extract import rounded
    from dcv.circuits.faithfulness import choosable_sizes, circuit_sizes, faithfulness_curve, head_means

    L, H = x.probed.shape
    sizes = circuit_sizes(L * H, p.faithfulness_sizes)
    if not base:
        sizes = choosable_sizes(disc.k, rounded(disc.f))  # the values score-dcv reads (rounded as in the JSON)
    c = faithfulness_curve(x.probed, disc.order, sizes, p.heads_per_forward, head_means(x.probed))
    return {"k": c.k, "f": rounded(c.f), "cpr": rounded(c.cpr), "order": [list(h) for h in c.order]}


# ---- by hand: one model directory ------------------------------------------------------------------------------

def _model_dir(ref: str, option: str = "--model") -> Path:
    """A model directory named on the command line: a path (it must be a directory with config.json) or a cached
    Hugging Face hub id (`owner/name`)."""
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise DcvError(f"{option}: {ref}: not a model directory (no config.json)")
        return p.resolve()
    if p.exists():
        raise DcvError(f"{option}: {ref}: not a directory")
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or (os.sep != "/" and os.sep in ref):
        raise DcvError(f"{option}: {ref}: no such directory")
    from dcv.models import resolve_hf

    try:
        return resolve_hf(ref, None)[0]
    except DcvError as e:
        raise DcvError(f"{option}: {ref}: no such directory, nor a hub id in the local cache "
                       f"({str(e).split('hub id: ', 1)[-1]})") from None


def by_hand_entry(directory: Path, root: Path) -> tuple[ModelRef, bool]:
    """The model's entry (its pipeline id for this repository's models) and whether it is under `models/`."""
    from dcv.layout import model_id
    from dcv.models import read_marker

    lay = Layout(root)
    try:
        rel = directory.relative_to(lay.models.resolve())
    except ValueError:
        return ModelRef(directory.name, directory, arm=directory.name), False
    d = lay.models / rel
    m = re.fullmatch(r"([^/]+)/seed-(\d+)/(?:checkpoints/step-(\d+)|final)", rel.as_posix())
    if rel == Path("base") or not m:
        return ModelRef(rel.as_posix(), d, arm=rel.as_posix()), True
    arm, seed = m[1], int(m[2])
    final_step = read_marker(lay.final_dir(arm, seed)).get("step")
    if m[3] is None:
        return ModelRef(f"{arm}/seed-{seed}/final", d, arm, seed, final_step or 0, True), True
    step = int(m[3])
    return ModelRef(model_id(arm, seed, step), d, arm, seed, step, step == final_step), True


@dataclass
class ByHand:
    """What a by-hand run measures, checked before the MLflow run opens."""

    entry: ModelRef
    base_dir: Path | None
    caps: dict[str, list[dict]]
    where: dict[str, str]


def plan_by_hand(root: Path, batch_size: int, model_ref: str, capabilities: list[str] | None, probes: str | None,
                 base_ref: str | None) -> ByHand:
    from dcv.models import load_tokenizer

    directory = _model_dir(model_ref)
    entry, in_repo = by_hand_entry(directory, root)
    if probes:
        f = Path(probes)
        if not f.is_file():
            raise DcvError(f"--probes: {probes}: no such file")
        caps, where = load_capabilities(f.parent, [f.stem]), {f.stem: str(f)}
    else:
        have = sorted(x.stem for x in (root / PROBES).glob("*.jsonl"))
        bad = [c for c in capabilities or [] if c not in have]
        if bad:
            raise DcvError(f"--capability: no probe set {', '.join(f'{PROBES}/{c}.jsonl' for c in bad)} "
                           f"(there are: {', '.join(have) or 'none; run stage prepare-data'})")
        caps = load_capabilities(root / PROBES, capabilities)
        where = {c: f"{PROBES}/{c}.jsonl" for c in caps}
    base_dir = _model_dir(base_ref, "--base") if base_ref else (Layout(root).base_model.resolve() if in_repo else None)
    if base_dir == directory:
        base_dir = None
    for d in (directory, base_dir):
        if d is not None:
            encode(load_tokenizer(d), caps, batch_size, where)
    return ByHand(entry, base_dir, caps, where)


def run_by_hand(ctx: StageContext, plan: ByHand, out_dir: Path) -> list[Path]:
    from dcv.circuits.extract import BaseReference, extract, k_at
    from dcv.circuits.methods import bind

    p = ctx.params.circuits
    seed_everything(ctx.params.common.seeds[0], ctx.params.common.torch_threads)
    kw = {"method": bind(p.method, p), "sizes": p.faithfulness_sizes, "heads_per_forward": p.heads_per_forward}
    refs = {}
    if plan.base_dir is not None:
        base, btok = _load(ctx, plan.base_dir)
        if p.batch_size == "auto":
            p = p.model_copy(update={"batch_size": fitted_batch_size(base, btok, plan.caps, p, kw)})
        for cap, b in encode(btok, plan.caps, p.batch_size, plan.where).items():
            x = extract(base, b, **kw)
            refs[cap] = BaseReference(x.probed, x.curve.order)
    model, tok = _load(ctx, plan.entry.dir)
    if p.batch_size == "auto":
        p = p.model_copy(update={"batch_size": fitted_batch_size(model, tok, plan.caps, p, kw)})
    written = []
    for cap, b in encode(tok, plan.caps, p.batch_size, plan.where).items():
        t0 = time.perf_counter()
        x = extract(model, b, base=refs.get(cap), **kw)
        path = write_circuit(out_dir, plan.entry, cap, x.record, ctx.root)
        k, f = k_at(x.curve, TARGET)
        summary = {"k80": k, "f_at_k80": f, "n_heads": len(x.curve.order), "cpr": x.curve.cpr,
                   "seconds": time.perf_counter() - t0}
        ctx.run.log_final({cap: summary})
        ctx.run.log_artifacts(path, f"circuits/{plan.entry.id}")
        ctx.run.log_artifacts(path.with_suffix(".png"), f"circuits/{plan.entry.id}")
        print(f"{path}: k80 {k} of {summary['n_heads']} heads, F {f if f is None else round(f, 3)}, "
              f"cpr {x.curve.cpr:.3f}, {summary['seconds']:.1f} s", flush=True)
        written.append(path)
    return written


def main(params: str, model: str | None = None, capabilities: list[str] | None = None, probes: str | None = None,
         base: str | None = None, out: str = OUT_BY_HAND) -> None:
    """Bad params, then bad inputs, stop the stage before anything is written (not even the MLflow run)."""
    prm, root = stage_params(params, "extract-circuits", PARAMS)
    if model is None:
        if capabilities or probes or base:
            raise DcvError("--capability, --probes and --base go with --model (measuring one model by hand)")
        caps, models, disc = check_inputs(root, list(prm.common.arms), list(prm.common.seeds), prm.circuits.batch_size,
                                          list(prm.circuits.study_capabilities))
        with stage("extract-circuits", params, PARAMS) as ctx:
            run(ctx, caps, models, disc)
        return
    plan = plan_by_hand(root, prm.circuits.batch_size, model, capabilities, probes, base)
    with stage("extract-circuits", params, PARAMS) as ctx:
        run_by_hand(ctx, plan, Path(out).resolve())
