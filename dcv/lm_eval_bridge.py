"""Optional bridge to lm-evaluation-harness 0.4.x (extra `eval`): local YAML tasks on any model directory, offline.

Only local tasks are used (`TaskManager(include_path=..., include_defaults=False)`): the harness's built-in tasks
download their data from a hub (shared/STACK.md gotcha 14). For the real profile, put YAML tasks for HellaSwag,
MMLU, ... pointing at local JSONL/parquet copies in one directory and list their names in `tasks`. The model and
its tokenizer are loaded by `dcv.models.load_model` (so toy word-level tokenizers load correctly) and handed to
the harness's `HFLM` as objects. `configs/lm_eval/` holds such tasks for HellaSwag, TruthfulQA-mc2, MMLU,
WinoGrande, IFEval and HumanEval, reading the files of a data directory (`data_dir`); `check_requirements` says
before a run what a task still lacks offline (a data file, a package, NLTK data, consent to execute code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dcv.errors import DcvError
from dcv.memory import batch_size_type

RequestsPerBatch = batch_size_type(4_096)


class LMEvalConfig(BaseModel):
    """Standard benchmarks through lm-evaluation-harness; off by default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = Field(False, description="Run the tasks below on the base and the fine-tuned models (needs the `eval` extra).")
    include_path: str | None = Field(None, description="Directory of task YAML files (relative to the params file).")
    tasks: list[str] = Field(default_factory=list, description="Task names defined in include_path.")
    limit: int | None = Field(None, ge=1, description="At most this many documents per task (null: all).")
    batch_size: RequestsPerBatch = Field(8, description="Requests per forward pass; auto: the harness's "
                                                    "own search for the largest that fits (HFLM batch_size='auto').")
    models: Literal["final", "all"] = Field("final", description="final: the base and each arm's final checkpoint per seed; all: every checkpoint.")
    data_dir: str | None = Field(None, description="Directory of the tasks' local data files (relative to the params file; configs/lm_eval/README.md).")
    allow_code_execution: bool = Field(False, description="Let tasks run model-written code on this machine (HumanEval); off unless you accept that.")
    chat: bool = Field(False, description="Render every request with the tokenizer's chat template (an instruct model).")

    system: str | None = Field(None, description="System message of the chat requests (chat only).")
    max_gen_toks: int | None = Field(None, ge=1, le=65536, description="New tokens of generative tasks (IFEval, HumanEval); null: each task's own.")

    @model_validator(mode="after")
    def _needs_tasks(self):
        if self.enabled and (not self.include_path or not self.tasks):
            raise ValueError("enabled needs include_path and a non-empty tasks list")
        if self.system is not None and not self.chat:
            raise ValueError("system: a system message needs chat: true")
        return self


def available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


def require(where: str = "forgetting.lm_eval.enabled") -> None:
    """A DcvError naming the key when the harness is not installed."""
    if not available():
        raise DcvError(f"{where}: lm-evaluation-harness is not installed (pip install -e '.[eval]')")


def _flatten(task_results: dict) -> dict[str, float]:
    """`{"acc,none": 0.5, "acc_stderr,none": "N/A", "alias": ...}` -> `{"acc": 0.5}` (filter kept unless `none`)."""
    out = {}
    for key, v in task_results.items():
        if "," not in key or isinstance(v, bool) or not isinstance(v, (int, float)) or "_stderr" in key:
            continue
        metric, filt = key.split(",", 1)
        out[metric if filt == "none" else f"{metric}/{filt}"] = float(v)
    return out


def _yaml_tasks(include_path: Path) -> dict[str, dict]:
    """task name -> its YAML (tags such as `!function` read as plain strings), for the checks before a run."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    out = {}
    for f in sorted(Path(include_path).rglob("*.yaml")):
        try:
            cfg = yaml.load(f.read_text(), Loader=Loader)
        except yaml.YAMLError:
            continue  # the harness reports it
        if isinstance(cfg, dict) and isinstance(cfg.get("task"), str):
            out[cfg["task"]] = cfg
    return out


def check_requirements(include_path: Path, tasks: list[str], data_dir: Path | None,
                       allow_code_execution: bool = False) -> None:
    """What a task needs offline, checked before the model is touched (a DcvError naming task and need): the local
    data files of `dataset_kwargs.files` under `data_dir`, and `metadata.dcv_requires` (Python `modules` with an `install` hint,
    `nltk_data` resources, `code_execution`), as the tasks of configs/lm_eval declare them."""
    import importlib.util

    cfgs = _yaml_tasks(include_path)
    for t in tasks:
        cfg = cfgs.get(t) or {}
        files = (cfg.get("dataset_kwargs") or {}).get("files") or {}
        if files:
            if data_dir is None:
                raise DcvError(f"lm_eval task {t}: reads local data files {sorted(files.values())}; "
                               "give the directory that holds them (data_dir)")
            for rel in files.values():
                if not (Path(data_dir) / rel).is_file():
                    raise DcvError(f"lm_eval task {t}: data file not found: {Path(data_dir) / rel} "
                                   "(configs/lm_eval/README.md says how to download it once)")
        req = (cfg.get("metadata") or {}).get("dcv_requires") or {}
        missing = [m for m in req.get("modules", []) if importlib.util.find_spec(m) is None]
        if missing:
            hint = f" ({req['install']})" if req.get("install") else ""
            raise DcvError(f"lm_eval task {t}: needs the Python packages {missing}{hint}")
        for res in req.get("nltk_data", []):
            import nltk

            try:
                nltk.data.find(res)
            except LookupError:
                raise DcvError(f"lm_eval task {t}: needs NLTK data {res!r} offline; on a machine with network run "
                               f"`python -m nltk.downloader -d <dir> {res.split('/')[1]}` and set NLTK_DATA=<dir>"
                               ) from None
        if req.get("code_execution") and not allow_code_execution:
            raise DcvError(f"lm_eval task {t}: runs model-written code on this machine; it needs "
                           "allow_code_execution")


def evaluate(model, tok, include_path: Path, tasks: list[str], limit: int | None = None, batch_size: int | str = 8,
             seed: int = 0, data_dir: Path | None = None, allow_code_execution: bool = False, chat: bool = False,
             system: str | None = None, gen_kwargs: dict | None = None) -> dict[str, dict[str, float]]:
    """task -> metric -> value for a loaded model and tokenizer (no stderr: bootstrap_iters=0).

    `data_dir` holds the local data files of the tasks (handed to them as TaskManager metadata); tasks that run
    model-written code (HumanEval) need `allow_code_execution`; `chat` renders every request with the tokenizer's
    chat template (`system`: its system message), as the harness's `apply_chat_template`; `gen_kwargs` overrides
    the generation settings of generative tasks (e.g. {"max_gen_toks": 64})."""
    require()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    include_path = Path(include_path)
    if not include_path.is_dir():
        raise DcvError(f"forgetting.lm_eval.include_path: directory not found: {include_path}")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DcvError(f"lm_eval data_dir: directory not found: {data_dir}")
    metadata = {"data_dir": str(Path(data_dir).resolve())} if data_dir is not None else None
    manager = TaskManager(include_path=str(include_path), include_defaults=False, metadata=metadata)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise DcvError(f"forgetting.lm_eval.tasks: {missing} not defined in {include_path}")
    check_requirements(include_path, tasks, data_dir, allow_code_execution)
    if chat and not getattr(tok, "chat_template", None):
        raise DcvError("lm_eval chat: the tokenizer has no chat template")
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    res = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                                  bootstrap_iters=0, log_samples=False, random_seed=seed, numpy_random_seed=seed,
                                  torch_random_seed=seed, fewshot_random_seed=seed,
                                  confirm_run_unsafe_code=allow_code_execution, apply_chat_template=chat,
                                  system_instruction=system, gen_kwargs=gen_kwargs)
    return {t: _flatten(res["results"][t]) for t in tasks if t in res["results"]}
