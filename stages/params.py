"""params.yaml: one typed, validated section per stage (one per registered arm) plus `common`.

Every bad value is reported as one line naming the file and the dotted key (`params.yaml: base.train.lr: ...`).
The schema is built from the library's own config classes, whose fields document themselves. params.yaml is the
one source of values: every key must be written out (a missing one is an error naming it); the library's defaults
are the same values (a test keeps them equal), for use outside the pipeline.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from dcv.arms import REGISTRY as ARMS
from dcv.arms.config import budget_mismatch
from dcv.circuits.config import CircuitsConfig
from dcv.errors import DcvError
from dcv.forgetting import ForgettingConfig
from dcv.scoring.config import ScoreConfig
from dcv.toy.corpus import CorpusConfig
from dcv.toy.model_config import PretrainConfig, ToyModelConfig
from dcv.toy.world import WorldConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LaunchParams(_Section):
    num_processes: int = Field(1, ge=1, le=4096, description="Training processes (GPUs); more than 1 runs the arms under `accelerate launch`.")
    config_file: str | None = Field(None, description="accelerate config (configs/accelerate/{ddp,zero2,zero3,fsdp}.yaml); set, the arms run under `accelerate launch` even with one process.")

    @property
    def enabled(self) -> bool:
        return self.num_processes > 1 or self.config_file is not None


class CommonParams(_Section):
    arms: list[str] = Field(default_factory=lambda: ["sft", "rl", "protect", "rl_sft"], min_length=1, description="The fine-tuning arms that are measured and compared (registered arms, each a dvc.yaml stage).")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, description="Seeds of the fine-tuning arms and everything downstream.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where models run; auto = cuda when available.")
    torch_threads: int = Field(2, ge=0, le=512, description="CPU threads for torch (0 = torch's default). Part of the params because CPU results may depend on it.")
    experiment: str = Field("dcv", min_length=1, description="MLflow experiment that holds this pipeline's runs.")
    launch: LaunchParams = Field(default_factory=LaunchParams, description="Multi-process training of the arms (accelerate).")

    @field_validator("arms")
    @classmethod
    def _registered(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ARMS]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"unknown or repeated arm {bad or v}; registered: {sorted(ARMS)}")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError("seeds must be distinct non-negative integers")
        return v


class ProbeParams(_Section):
    source: str = Field("toy", description="Where the probe pairs come from (dcv.probe_sources): toy (the toy world's capabilities, its own tokenizer) | templates (any Hugging Face tokenizer).")
    n_pairs: int = Field(64, ge=1, le=100_000, description="Held-out probe pairs per capability of the scoring split (`probes`): head effects of every model, hence CV and every circuit measure.")
    n_protection: int = Field(64, ge=1, le=100_000, description="Held-out pairs per capability of the protection split (arm protect trains its penalty on their clean prompts), disjoint from validation and probes.")
    n_discovery: int = Field(64, ge=1, le=100_000, description="Held-out pairs per capability of the discovery split: the base circuit C0 (heads and size) is chosen on them, never scored on them.")
    n_forgetting: int = Field(64, ge=1, le=100_000, description="Held-out pairs per capability of the forgetting split: accuracy and logit difference of every model (forgetting), disjoint from the pairs the circuits are scored on.")


class TargetParams(_Section):
    source: str = Field("toy", description="A registered target source (dcv.target_sources): toy (the world's new fact table) | sciknoweval (JSONL files in the directory `path`) | sciknoweval-hub (the hub dataset `path`, null: hicai-zju/SciKnowEval, from the local Hugging Face cache).")
    n_train: int = Field(5000, ge=1, le=10_000_000, description="Target train rows (toy; for sciknoweval, the rest after eval).")
    n_eval: int = Field(200, ge=1, le=10_000_000, description="Target eval rows.")
    path: str | None = Field(None, description="sciknoweval: directory of SciKnowEval JSONL files; sciknoweval-hub: the hub dataset id (null: hicai-zju/SciKnowEval); toy: null.")
    revision: str | None = Field(None, description="sciknoweval-hub: the hub revision (branch, tag or commit; null: main); null for the other sources.")
    subsets: list[str] | None = Field(None, description="SciKnowEval subsets to use (sciknoweval: file stems; sciknoweval-hub: details.task names); all when null.")
    chat: bool = Field(False, description="Prompts as one user turn rendered with the tokenizer's chat template (an instruct model); false: plain text.")
    system: str | None = Field(None, description="System message of the chat prompts (chat only; null: none, or the template's default).")

    @field_validator("source")
    @classmethod
    def _registered(cls, v: str) -> str:
        from dcv.target_sources import SOURCES

        if v not in SOURCES:
            raise ValueError(f"unknown target source {v!r}; registered: {', '.join(SOURCES)}")
        return v

    @model_validator(mode="after")
    def _system_needs_chat(self):
        if self.system is not None and not self.chat:
            raise ValueError("system: a system message needs chat: true")
        return self

    def spec(self, root: Path):
        """The source's arguments (dcv.target_sources.TargetSpec), a local `path` resolved against `root`."""
        from dcv.target_sources import SOURCES, TargetSpec

        loc = self.path
        if loc is not None and SOURCES[self.source].local and not Path(loc).is_absolute():
            loc = str(root / loc)
        return TargetSpec(self.n_train, self.n_eval, loc, self.subsets, self.chat, self.revision)


def target_key(e: ValueError) -> tuple[str, str]:
    """(params key, message) of a target source's argument error ("location: ..." -> data.target.path)."""
    arg, _, msg = str(e).partition(": ")
    return f"data.target.{'path' if arg == 'location' else arg}", msg


class TargetPairsParams(_Section):
    kinds: list[str] = Field(default_factory=lambda: ["key_swap", "entity_swap"], description="Counterfactual pair kinds of the target task's probe pairs (capability `target`, dcv.target_pairs): key_swap (the gold option swapped with another) | entity_swap (toy only: another target entity whose food is another option) | molecule_swap (SciKnowEval MCQ rows: the question's molecule from another eval row of the same task), assigned round robin over the target eval rows; [] = no target capability.")
    n_pairs: int = Field(64, ge=1, le=100_000, description="Target pairs of the scoring split (`probes/target.jsonl`), one per target eval row.")
    n_discovery: int = Field(64, ge=1, le=100_000, description="Target pairs of the discovery split (`discovery/target.jsonl`), from eval rows the scoring split does not use.")

    @field_validator("kinds")
    @classmethod
    def _registered(cls, v: list[str]) -> list[str]:
        from dcv.target_pairs import KINDS

        bad = [k for k in v if k not in KINDS]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"unknown or repeated pair kind {bad or v}; registered: {', '.join(KINDS)}")
        return v


class DataParams(_Section):
    tokenizer: str = Field("toy", min_length=1, description="toy: build the world's word-level tokenizer; else a Hugging Face id or local dir.")
    world: WorldConfig = Field(default_factory=WorldConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    capabilities: list[str] = Field(default_factory=lambda: ["induction", "ioi", "facts", "arithmetic", "mcqa"], min_length=1,
                                    description="Prior capabilities to probe.")
    n_validation: int = Field(100, ge=1, le=100_000, description="Held-out pairs per capability for the base's own check.")
    probes: ProbeParams = Field(default_factory=ProbeParams)
    target: TargetParams = Field(default_factory=TargetParams)
    target_pairs: TargetPairsParams = Field(default_factory=TargetPairsParams)

    @field_validator("capabilities")
    @classmethod
    def _not_target(cls, v: list[str]) -> list[str]:
        from dcv.splits import TARGET

        if TARGET in v:
            raise ValueError(f"{TARGET!r} is the target task's own probe pairs (data.target_pairs), not a prior "
                             f"capability")
        return v


class HFModelParams(_Section):
    model: str = Field("Qwen/Qwen2.5-3B-Instruct", min_length=1, description="Hugging Face id or local directory.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit); null = the default branch.")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model. Off unless you trust it.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto: bfloat16 on cuda, float32 on cpu.")


class BaseParams(_Section):
    kind: Literal["toy", "hf"] = Field("toy", description="toy: pretrain the toy world's model; hf: load a Hugging Face causal LM.")
    seed: int = Field(0, ge=0, description="Seed of the toy model's initialisation and batch order.")
    model: ToyModelConfig = Field(default_factory=ToyModelConfig)
    train: PretrainConfig = Field(default_factory=PretrainConfig)
    hf: HFModelParams = Field(default_factory=HFModelParams)


class _Stages(_Section):
    common: CommonParams = Field(default_factory=CommonParams)
    data: DataParams = Field(default_factory=DataParams)
    base: BaseParams = Field(default_factory=BaseParams)
    circuits: CircuitsConfig = Field(default_factory=CircuitsConfig)
    dcv: ScoreConfig = Field(default_factory=ScoreConfig)
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig)


# One section per registered arm, named after it (an arm is a registered entry: `dcv.arms.registry`).
Params = create_model("Params", __base__=_Stages,
                      **{name: (arm.config, Field(default_factory=arm.config)) for name, arm in ARMS.items()})


# YAML 1.1 reads 1e-3 as a string; accept it as the float every user means. A key written twice in one mapping is
# an error (PyYAML would silently keep the last one).
class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise DuplicateKey(key, seen[key], key_node.start_mark.line + 1)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


class DuplicateKey(Exception):
    def __init__(self, key, first: int, again: int):
        self.key, self.first, self.again = key, first, again


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _fmt_error(path: Path, err: ValidationError) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], (dict, list)):
        msg += f" (got {e['input']!r})"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {key}: {msg}{more}"


SEED_MAX = 2**32 - 1  # numpy's np.random.seed (seed_everything, transformers' set_seed) takes 0..2**32 - 1


def load_params(path: str | Path) -> Params:
    """Read and validate a params file; any problem is a DcvError naming the file and the key.

    Checked here, from the file alone (and the machine, for `common.device`): every section and key present, types
    and ranges, and the cross-field rules (model shape, seeds, budgets, pairs, common checkpoint steps, the toy
    world's capacity, paths). What needs the tokenizer or prepared files is checked by each stage before it opens
    its MLflow run, and all of it up front by `dcv check` (stages/check.py)."""
    path = Path(path)
    if not path.is_file():
        raise DcvError(f"{path}: params file not found" + (" (a directory)" if path.is_dir() else ""))
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DcvError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x})") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except DuplicateKey as e:
        raise DcvError(f"{path}:{e.again}: key {e.key!r} is written twice in one section (first on line {e.first})") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f"{path}:{line + 1}" if line is not None else str(path)
        raise DcvError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if raw is None:
        raise DcvError(f"{path}: empty: every section is missing ({', '.join(Params.model_fields)}; params.yaml of "
                       f"the repository documents each key)")
    if not isinstance(raw, dict):
        raise DcvError(f"{path}: the top level must be a mapping of sections ({', '.join(Params.model_fields)})")
    missing = _missing(Params, raw)
    if missing:
        why = "" if "required)" in missing else " (every key is written out; params.yaml of the repository documents each one)"
        raise DcvError(f"{path}: {missing}{why}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as e:
        raise DcvError(_fmt_error(path, e)) from None
    check_params(path, params)
    return params


def check_params(path: Path, p) -> None:
    """The cross-field rules of a validated params object (each error names the file and a dotted key)."""
    _check_seeds(path, p.model_dump(mode="json", by_alias=True))
    _check_model_shape(path, p)
    _check_device(path, p)
    _check_files(path, p)
    _check_budgets(path, p)
    _check_inits(path, p)
    _check_pairs(path, p)
    _check_study_capabilities(path, p)
    _check_common_steps(path, p)
    _check_toy_target(path, p)
    _check_probe_source(path, p)


def _check_probe_source(path: Path, p) -> None:
    """A registered probe source that can build the named capabilities for the tokenizer in use."""
    from dcv.probe_sources import SOURCES

    d = p.data
    src = SOURCES.get(d.probes.source)
    if src is None:
        raise DcvError(f"{path}: data.probes.source: unknown probe source {d.probes.source!r} (one of "
                       f"{', '.join(sorted(SOURCES))})")
    known = src.capabilities()
    bad = [c for c in d.capabilities if c not in known]
    if bad or len(set(d.capabilities)) != len(d.capabilities):
        raise DcvError(f"{path}: data.capabilities: unknown or repeated capability {bad or d.capabilities} for "
                       f"data.probes.source {src.name} (it has: {', '.join(known)})")
    if src.any_tokenizer and d.tokenizer == "toy":
        raise DcvError(f"{path}: data.probes.source: {src.name} builds probes for a Hugging Face tokenizer, and "
                       f"data.tokenizer is toy (use source toy, or name the model's tokenizer)")


def _check_seeds(path: Path, d: dict, prefix: str = "") -> None:
    """Every seed (`seed`, `*_seed`, `seeds`) in numpy's range, else numpy fails seconds into the stage."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _check_seeds(path, v, key + ".")
        elif k == "seed" or k.endswith("_seed") or k == "seeds":
            for s in v if isinstance(v, list) else [v]:
                if isinstance(s, int) and not 0 <= s <= SEED_MAX:
                    raise DcvError(f"{path}: {key}: {s} is out of range (a seed is 0..{SEED_MAX}, numpy's range)")


def _check_model_shape(path: Path, p) -> None:
    """A toy model Qwen2 can build: heads divide the width, key/value heads divide the heads, rotary needs an even
    head dimension."""
    m = p.base.model
    if m.hidden_size % m.num_attention_heads:
        raise DcvError(f"{path}: base.model.num_attention_heads: {m.num_attention_heads} does not divide "
                       f"base.model.hidden_size ({m.hidden_size})")
    if m.num_attention_heads % m.num_key_value_heads:
        raise DcvError(f"{path}: base.model.num_key_value_heads: {m.num_key_value_heads} does not divide "
                       f"base.model.num_attention_heads ({m.num_attention_heads})")
    if (m.hidden_size // m.num_attention_heads) % 2:
        raise DcvError(f"{path}: base.model.num_attention_heads: head dimension hidden_size / num_attention_heads = "
                       f"{m.hidden_size // m.num_attention_heads} is odd (rotary position embeddings need it even)")


def _check_device(path: Path, p) -> None:
    if p.common.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise DcvError(f"{path}: common.device: cuda, but {why} (use auto or cpu)")


def _check_common_steps(path: Path, p) -> None:
    """score-dcv compares each pair of `dcv.pairs` at a checkpoint step both arms have (the last such)."""
    for pair in p.dcv.pairs:
        if any(a not in ARMS for a in pair):
            continue  # _check_pairs names it
        steps = {a: set(getattr(p, a).checkpoint_steps()) for a in pair}
        if not set.intersection(*steps.values()):
            listed = "; ".join(f"{a}: {sorted(s)}" for a, s in steps.items())
            raise DcvError(f"{path}: dcv.pairs: {list(pair)} share no checkpoint step ({listed}), so score-dcv "
                           f"cannot compare them at equal steps (give them a common save step, or match_budget_of)")


def toy_target_capacity(world) -> int:
    """Distinct toy target questions (`dcv.toy.target.make_rows`: an entity with a known food, and four options,
    the gold food and three others, in any order). tests/test_bad_input.py checks it against make_rows."""
    from math import comb, factorial

    return world.n_target_entities * comb(world.n_foods - 1, 3) * factorial(4)


def _check_toy_target(path: Path, p) -> None:
    """More toy target rows than distinct questions would make make_rows search (200 x rows tries) before it fails."""
    t = p.data.target
    from dcv.target_sources import SOURCES

    if SOURCES[t.source].toy:
        cap = toy_target_capacity(p.data.world)
        if t.n_train + t.n_eval > cap:
            raise DcvError(f"{path}: data.target.n_train: n_train + n_eval = {t.n_train + t.n_eval}, but the toy world "
                           f"has only {cap} distinct target questions (data.world.n_target_entities x option orders)")


def _check_pairs(path: Path, p) -> None:
    """Every scored pair of arms is made of arms the pipeline runs."""
    for pair in p.dcv.pairs:
        bad = [a for a in pair if a not in p.common.arms]
        if bad:
            raise DcvError(f"{path}: dcv.pairs: {pair} names {bad}, not in common.arms {p.common.arms}")


def _check_study_capabilities(path: Path, p) -> None:
    """The study's masks are fitted on probe sets that prepare-data writes: a prior capability, or the target's own
    pairs when `data.target_pairs.kinds` makes them."""
    from dcv.splits import TARGET

    have = list(p.data.capabilities) + ([TARGET] if p.data.target_pairs.kinds else [])
    bad = [c for c in p.circuits.study_capabilities if c not in have]
    if bad:
        raise DcvError(f"{path}: circuits.study_capabilities: {', '.join(bad)} is no probe set of prepare-data "
                       f"(there are: {', '.join(have)})")
    if len(set(p.circuits.study_capabilities)) != len(p.circuits.study_capabilities):
        raise DcvError(f"{path}: circuits.study_capabilities: a capability is named twice")


def _missing(model: type[BaseModel], raw: dict, prefix: str = "") -> str | None:
    """The first schema key absent from `raw` (dotted) with what is missing, descending into sub-sections (a section
    written empty, `base:` alone, is missing all its keys); None when complete."""
    known = [f.alias or name for name, f in model.model_fields.items()]
    for name, f in model.model_fields.items():
        key = f.alias or name
        ann = f.annotation
        section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if key not in raw:
            near = difflib.get_close_matches(key, [k for k in raw if k not in known], n=1)
            return (f"{prefix}{key}: missing" + (" section" if section else "")
                    + (f", but {prefix}{near[0]} is written (a misspelling?)" if near else ""))
        if section and raw[key] is None:
            return f"{prefix}{key}: empty section (its keys {', '.join(g.alias or n for n, g in ann.model_fields.items())} are required)"
        if isinstance(raw[key], dict) and section:
            sub = _missing(ann, raw[key], f"{prefix}{key}.")
            if sub:
                return sub
    return None


def _check_budgets(path: Path, p) -> None:
    """Arms compare fairly only on equal budgets: an arm with `match_budget_of` must have the other arm's prompts
    per step, steps and checkpoint steps."""
    for name in ARMS:
        cfg = getattr(p, name)
        other = cfg.match_budget_of
        if other is None:
            continue
        if other not in ARMS or other == name:
            raise DcvError(f"{path}: {name}.match_budget_of: {other!r} is not another registered arm {sorted(ARMS)}")
        diff = budget_mismatch(cfg, getattr(p, other))
        if diff:
            raise DcvError(f"{path}: {name}.{diff[0]}: {diff[1]} of {other}, while {name}.match_budget_of is "
                           f"{other} (match them, or set it null)")


def _check_inits(path: Path, p) -> None:
    """An arm continues the base or another registered arm, at one of that arm's checkpoint steps, with no cycle; a
    measured arm's start must be measured too (score-dcv reads its circuits as the arm's step 0)."""
    for name in ARMS:
        cfg = getattr(p, name)
        if cfg.init == "base":
            if cfg.init_step is not None:
                raise DcvError(f"{path}: {name}.init_step: {cfg.init_step}, but {name}.init is base (set it null)")
            continue
        if cfg.init not in ARMS or cfg.init == name:
            raise DcvError(f"{path}: {name}.init: {cfg.init!r} is neither base nor another registered arm {sorted(ARMS)}")
        steps = getattr(p, cfg.init).checkpoint_steps()
        if cfg.init_step is not None and cfg.init_step not in steps:
            raise DcvError(f"{path}: {name}.init_step: {cfg.init_step} is not a checkpoint step of arm {cfg.init} "
                           f"({steps})")
        chain, a = [name], cfg.init
        while a != "base":
            if a in chain:
                raise DcvError(f"{path}: {name}.init: the arms start from each other ({' -> '.join(chain + [a])})")
            chain.append(a)
            a = getattr(p, a).init
        if name in p.common.arms and cfg.init not in p.common.arms:
            raise DcvError(f"{path}: common.arms: {name} continues arm {cfg.init} ({name}.init), which is not in "
                           f"common.arms {p.common.arms} (its checkpoints are the start {name} is measured from)")


def _check_files(path: Path, p: Params) -> None:
    """Paths named in params must exist (relative paths are relative to the params file's directory)."""
    root = path.resolve().parent
    t = p.data.target
    from dcv.target_sources import SOURCES

    try:
        SOURCES[t.source].check(t.spec(root))
    except ValueError as e:
        key, msg = target_key(e)
        raise DcvError(f"{path}: {key}: {msg}") from None
    cf = p.common.launch.config_file
    if cf is not None and not (root / cf).is_file():
        raise DcvError(f"{path}: common.launch.config_file: file not found: {cf}")
    if p.common.launch.num_processes > 1 and cf is None:
        raise DcvError(f"{path}: common.launch.config_file: needed when num_processes > 1 (configs/accelerate/*.yaml)")
    if cf is not None:
        _check_sharding(path, root / cf, cf, p)
    for key, val in (("data.tokenizer", p.data.tokenizer), ("base.hf.model", p.base.hf.model)):
        if key == "base.hf.model" and p.base.kind != "hf":
            continue
        if val != "toy" and _looks_local(val) and not (root / val).exists():
            raise DcvError(f"{path}: {key}: directory not found: {val}")


def sharded_parameters(config: dict) -> str | None:
    """The name of an accelerate config's parameter sharding (ZeRO-3, FSDP), None when parameters are whole."""
    if config.get("distributed_type") == "FSDP":
        return "FSDP"
    ds = config.get("deepspeed_config") or {}
    if config.get("distributed_type") == "DEEPSPEED" and int(ds.get("zero_stage", 0) or 0) == 3:
        return "ZeRO-3"
    return None


def _check_sharding(path: Path, file: Path, name: str, p) -> None:
    """LoRA checkpoints are saved merged into a copy of the full weights, which sharded parameters (ZeRO-3, FSDP)
    do not have on any one rank: refused here, before any rank starts, rather than at the first checkpoint."""
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DcvError(f"{path}: common.launch.config_file: {name}: not a readable YAML file ({str(e).splitlines()[0]})") from None
    kind = sharded_parameters(config) if isinstance(config, dict) else None
    if kind is None:
        return
    for arm in p.common.arms:
        if getattr(p, arm).finetune == "lora":
            raise DcvError(f"{path}: {arm}.finetune: lora with {kind} (common.launch.config_file {name}) is not "
                           f"supported: the merged checkpoint needs whole parameters; use ddp.yaml or zero2.yaml, "
                           f"or finetune: full")


def _looks_local(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1


def section_hash(picked: dict) -> str:
    """sha256 of the canonical JSON of a stage's params (`View.dump`): tags a run with exactly what it depends on."""
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def pick(params, keys: list[str]) -> dict:
    dump = params.model_dump(mode="json", by_alias=True)
    return {k: _get(dump, k) for k in keys}


# Every stage reads this key to open its MLflow run; it says where results are logged, not what they are, so
# dvc.yaml does not track it (changing it reruns nothing).
UNTRACKED = ["common.experiment"]


class View:
    """Read access to the declared dotted keys of a params object only: a stage reads exactly what dvc.yaml
    tracks for it, and reading anything else is an error that names the key (so the two cannot drift)."""

    def __init__(self, obj, keys: list[str], stage: str, prefix: str = ""):
        self._obj, self._keys, self._stage, self._prefix = obj, list(keys), stage, prefix

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        key = f"{self._prefix}{name}"
        if any(key == k or key.startswith(k + ".") for k in self._keys):
            return getattr(self._obj, name)  # a declared key (or inside one): the value itself
        if any(k.startswith(key + ".") for k in self._keys):
            return View(getattr(self._obj, name), self._keys, self._stage, key + ".")
        raise AttributeError(f"stage {self._stage} reads params key {key}, which it does not declare "
                             f"(its declared keys: {', '.join(self._keys)})")

    def dump(self) -> dict:
        """The declared keys' values, JSON-able (for the run's params and the params hash)."""
        return pick(self._obj, self._keys)


def view(params, keys: list[str], stage: str) -> View:
    return View(params, keys, stage)
