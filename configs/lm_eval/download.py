"""Write the data files the local lm-eval tasks here read, once, on a machine with network.

    python configs/lm_eval/download.py <data_dir>

It cannot run on this project's machines (they reach no dataset hub); it was written from the datasets' public
schemas and has not been run here. Each benchmark's evaluation split goes to `<data_dir>/<file>` as JSON lines,
the rows exactly as `datasets` gives them. Then point the tasks at `<data_dir>`
(`dcv.lm_eval_bridge.evaluate(..., data_dir=...)` or DCV_LM_EVAL_DATA) and nothing is fetched at run time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# file -> (hub dataset, config, split): the sources of the harness's own tasks (lm_eval 0.4.13)
SOURCES = {
    "hellaswag/validation.jsonl": ("Rowan/hellaswag", None, "validation"),
    "truthfulqa/validation.jsonl": ("truthfulqa/truthful_qa", "multiple_choice", "validation"),
    "mmlu/test.jsonl": ("cais/mmlu", "all", "test"),
    "winogrande/validation.jsonl": ("allenai/winogrande", "winogrande_xl", "validation"),
    "ifeval/train.jsonl": ("google/IFEval", None, "train"),
    "humaneval/test.jsonl": ("openai/openai_humaneval", None, "test"),
}


def main(data_dir: str) -> None:
    import datasets

    for rel, (path, name, split) in SOURCES.items():
        ds = datasets.load_dataset(path, name, split=split)
        out = Path(data_dir) / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            for row in ds:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{out}: {len(ds)} rows from {path} ({name or 'default'}, {split})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python configs/lm_eval/download.py <data_dir>")
    main(sys.argv[1])
