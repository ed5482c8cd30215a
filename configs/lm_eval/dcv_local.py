"""Helpers of the local lm-evaluation-harness tasks in this directory: data from local JSONL files, and the
harness's own scoring code where it needs nothing from a hub.

- `load_local` is every task's `custom_dataset`: it reads `<data_dir>/<file>` for each split named in the task's
  `dataset_kwargs.files`; `data_dir` comes from the TaskManager's metadata (`dcv.lm_eval_bridge.evaluate`'s
  `data_dir`) or the environment variable DCV_LM_EVAL_DATA. Nothing is fetched: a missing file is an error that
  names it (see README.md here for the files and the one-off download command).
- HellaSwag, TruthfulQA-mc2, WinoGrande and IFEval score with the harness's own functions, imported from
  `lm_eval.tasks.*`, so the numbers are the harness's.
- HumanEval: the harness scores it with `evaluate.load("code_eval")`, which fetches the metric's code from the
  Hugging Face hub at import time, so it cannot run offline. `pass_at_k` below does what that metric does (run
  each candidate program followed by the task's tests in a fresh Python process with a timeout; pass@k by the
  unbiased estimator of Chen et al. 2021) without any download. It executes model-written code: the task is
  marked `unsafe_code`, the harness refuses it unless the caller confirms (`allow_code_execution`), and the
  child process is only isolated by a temporary working directory, `python -I`, a timeout and memory/CPU limits:
  it is not a sandbox.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_DATA_DIR = "DCV_LM_EVAL_DATA"


def load_local(data_dir: str | None = None, files: dict | None = None, **_metadata):
    """The task's splits as a DatasetDict, from `<data_dir>/<files[split]>` (JSON lines)."""
    import datasets

    root = data_dir or os.environ.get(ENV_DATA_DIR)
    if not root:
        raise FileNotFoundError(f"local lm-eval data: no data directory (pass data_dir, or set {ENV_DATA_DIR})")
    if not files:
        raise ValueError("local lm-eval task: dataset_kwargs.files must map split names to files")
    paths = {split: Path(root) / rel for split, rel in files.items()}
    for split, p in paths.items():
        if not p.is_file():
            raise FileNotFoundError(f"local lm-eval data: {p} not found (split {split}); "
                                    "see configs/lm_eval/README.md for the one-off download")
    return datasets.load_dataset("json", data_files={s: str(p) for s, p in paths.items()})


# --- HellaSwag, TruthfulQA, WinoGrande: the harness's own functions -----------------------------------------


def hellaswag_process_docs(dataset):
    from lm_eval.tasks.hellaswag.utils import process_docs

    return process_docs(dataset)


def truthfulqa_process_results_mc2(doc, results):
    from lm_eval.tasks.truthfulqa.utils import process_results_mc2

    return process_results_mc2(doc, results)


def winogrande_doc_to_text(doc):
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_text

    return doc_to_text(doc)


def winogrande_doc_to_target(doc):
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_target

    return doc_to_target(doc)


def winogrande_doc_to_choice(doc):
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_choice

    return doc_to_choice(doc)


# --- IFEval: the harness's checker, which needs langdetect, immutabledict and NLTK's punkt_tab --------------


def _ifeval():
    """The harness's IFEval utils; importing them downloads NLTK's punkt_tab when absent, so check first."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english")
    except LookupError:
        raise RuntimeError("IFEval needs NLTK's punkt_tab data offline: on a machine with network run "
                           "`python -m nltk.downloader -d <dir> punkt_tab` and set NLTK_DATA=<dir>") from None
    from lm_eval.tasks.ifeval import utils

    return utils


def ifeval_process_results(doc, results):
    return _ifeval().process_results(doc, results)


def ifeval_agg_inst_level_acc(items):
    flat = [x for sub in items for x in sub]
    return sum(flat) / len(flat)  # as lm_eval.tasks.ifeval.utils.agg_inst_level_acc


# --- HumanEval: pass@k by running the programs here ----------------------------------------------------------

TIMEOUT_S = 3.0  # per program, as evaluate's code_eval
MEMORY_BYTES = 2 << 30


def _limits():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (int(TIMEOUT_S) + 1, int(TIMEOUT_S) + 1))


def passes(program: str, timeout: float = TIMEOUT_S) -> bool:
    """Whether a program exits with status 0 within `timeout` seconds, run by `python -I` in a fresh temporary
    directory with no standard input and a minimal environment."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dcv-humaneval-") as d:
        path = Path(d) / "program.py"
        path.write_text(program)
        try:
            r = subprocess.run([sys.executable, "-I", str(path)], cwd=d, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
                               env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
                               preexec_fn=_limits if os.name == "posix" else None)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0


def _estimate(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    p = 1.0
    for i in range(n - c + 1, n + 1):
        p *= 1.0 - k / i
    return 1.0 - p


def pass_at_k(references: list[str], predictions: list[list[str]], k: list[int] | int | None = None) -> dict:
    """One document's pass@k ({"pass@1": ...}), as evaluate's code_eval returns it: each candidate program, then
    the reference tests, must run without error."""
    ks = [k] if isinstance(k, int) else list(k or [1])
    out = {}
    for ref, cands in zip(references, predictions):
        c = sum(passes(cand + "\n" + ref) for cand in cands)
        for kk in ks:
            if len(cands) >= kk:
                out[f"pass@{kk}"] = _estimate(len(cands), c, kk)
    return out


def humaneval_build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """The prompt followed by each completion (as the harness's humaneval `build_predictions`)."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]
