"""Optional bridge to lm-evaluation-harness 0.4.x (extra `eval`): local YAML tasks on any model directory, offline.

Only local tasks are used (`TaskManager(include_path=..., include_defaults=False)`): the harness's built-in tasks
download their data from a hub (shared/STACK.md gotcha 14). For the real profile, put YAML tasks for HellaSwag,
MMLU, ... pointing at local JSONL/parquet copies in one directory and list their names in `tasks`. The model and
its tokenizer are loaded by `dcv.models.load_model` (so toy word-level tokenizers load correctly) and handed to
the harness's `HFLM` as objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dcv.errors import DcvError


class LMEvalConfig(BaseModel):
    """Standard benchmarks through lm-evaluation-harness; off by default."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = Field(False, description="Run the tasks below on the base and the fine-tuned models (needs the `eval` extra).")
    include_path: str | None = Field(None, description="Directory of task YAML files (relative to the params file).")
    tasks: list[str] = Field(default_factory=list, description="Task names defined in include_path.")
    limit: int | None = Field(None, ge=1, description="At most this many documents per task (null: all).")
    batch_size: int = Field(8, ge=1, le=4096, description="Requests per forward pass.")
    models: Literal["final", "all"] = Field("final", description="final: the base and each arm's final checkpoint per seed; all: every checkpoint.")

    @model_validator(mode="after")
    def _needs_tasks(self):
        if self.enabled and (not self.include_path or not self.tasks):
            raise ValueError("enabled needs include_path and a non-empty tasks list")
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


def evaluate(model, tok, include_path: Path, tasks: list[str], limit: int | None = None, batch_size: int = 8,
             seed: int = 0) -> dict[str, dict[str, float]]:
    """task -> metric -> value for a loaded model and tokenizer (no stderr: bootstrap_iters=0)."""
    require()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    include_path = Path(include_path)
    if not include_path.is_dir():
        raise DcvError(f"forgetting.lm_eval.include_path: directory not found: {include_path}")
    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise DcvError(f"forgetting.lm_eval.tasks: {missing} not defined in {include_path}")
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
    res = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                                  bootstrap_iters=0, log_samples=False, random_seed=seed, numpy_random_seed=seed,
                                  torch_random_seed=seed, fewshot_random_seed=seed)
    return {t: _flatten(res["results"][t]) for t in tasks if t in res["results"]}
