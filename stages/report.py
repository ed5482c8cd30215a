"""Stage `report`: reports/report.md, a document a researcher can read alone, and its figures.

    dcv stage report [--params params.yaml]

Reads the metrics of `base`, the arms, `evaluate-forgetting` and `score-dcv`, the plot data of the last two, and the
params that describe the setup. Writes `reports/report.md`, `reports/figures/*.png` and `reports/summary.json`
(the verdict's numbers: also this run's MLflow metrics); the whole `reports/` directory is the run's artifact.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, stage

SECTIONS = ["base.kind", "base.model", "base.hf", "data.target", "sft", "rl", "common.seeds", "common.experiment"]
OUT = "reports"
INPUTS = ["metrics/base.json", "metrics/sft.json", "metrics/rl.json", "metrics/evaluate-forgetting.json",
          "metrics/score-dcv.json", "plots/dcv/checkpoints.csv"]


def _json(path: Path) -> dict:
    if not path.is_file():
        raise DcvError(f"{path}: not found (run the stage that writes it first)")
    return json.loads(path.read_text(encoding="utf-8"))


def _csv(path: Path) -> list[dict]:
    def num(v: str):
        if v == "":
            return None
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return v

    with open(path, newline="", encoding="utf-8") as f:
        return [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]


def load_data(root: Path, params):
    from dcv.report.document import ReportData

    for rel in INPUTS:
        if not (root / rel).is_file():
            raise DcvError(f"{root / rel}: not found (run the stage that writes it first)")
    score = _json(root / "metrics/score-dcv.json")
    heads = {c: _json(root / "plots/dcv/heads" / f"{c}.json") for c in score["capabilities"]}
    dump = params.model_dump(mode="json")
    setup = {"base": dump["base"], "target": dump["data"]["target"], "seeds": dump["common"]["seeds"],
             "arms": {a: dump[a] for a in score["arms"]}}
    return ReportData(setup=setup, base=_json(root / "metrics/base.json"),
                      arms={a: _json(root / f"metrics/{a}.json") for a in score["arms"]},
                      forgetting=_json(root / "metrics/evaluate-forgetting.json"), score=score, heads=heads,
                      circuit_rows=_csv(root / "plots/dcv/checkpoints.csv"))


def run(ctx: StageContext, data) -> dict:
    from dcv.report.document import build

    t0 = time.perf_counter()
    with io.atomic_dir(ctx.path(OUT)) as d:
        text, summary = build(data, d / "figures")
        io.write_text(d / "report.md", text)
        io.write_json(d / "summary.json", io.json_safe(summary))
    summary = io.json_safe(summary)
    ctx.run.log_final({**summary, "wall_s": round(time.perf_counter() - t0, 2)})
    ctx.run.log_artifacts(ctx.path(OUT), "report")
    return summary


def main(params: str) -> None:
    """Bad params, then missing inputs, stop the stage before anything is written (not even the MLflow run)."""
    from stages.params import load_params

    p = load_params(params)
    data = load_data(Path(params).resolve().parent, p)
    with stage("report", params, SECTIONS) as ctx:
        run(ctx, data)
