"""Stage `report`: reports/report.md, a document a researcher can read alone, and its figures.

    dcv stage report [--params params.yaml]

Reads the metrics of every stage (`metrics/`: the probe splits, the base, each arm's training, evaluate-forgetting,
score-dcv), the two tables (`measurements/models.csv`, `measurements/circuits.csv`), the head maps of score-dcv
(`plots/dcv/heads/`) and the params that describe the setup. Writes `reports/report.md`, `reports/figures/*.png` and
`reports/summary.json` (the verdict's numbers: also this run's MLflow metrics); the whole `reports/` directory is
the run's artifact.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from dcv import io
from dcv.errors import DcvError
from stages.context import StageContext, stage, stage_params

PARAMS = ["base.kind", "base.model", "base.hf", "data.target", "common.seeds"]


def _json(path: Path) -> dict:
    if not path.is_file():
        raise DcvError(f"{path}: not found (run the stage that writes it first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DcvError(f"{path}: not valid JSON ({e.msg})") from None


def load_data(layout, params):
    from dcv.measurements import MeasurementTable
    from dcv.report.document import ReportData
    from dcv.scoring.scores import CircuitScore
    from dcv.tables import read_table

    score = _json(layout.metrics("score-dcv"))
    heads = {f"{a}-{b}": {c: _json(layout.plots("dcv") / "heads" / f"{a}-{b}" / f"{c}.json")
                          for c in score["base_circuits"]} for a, b in score["pairs"]}
    setup = {"base": {"kind": params.base.kind, "model": params.base.model.model_dump(mode="json"),
                      "hf": params.base.hf.model_dump(mode="json")},
             "target": params.data.target.model_dump(mode="json"), "seeds": list(params.common.seeds)}
    return ReportData(setup=setup, base=_json(layout.metrics("base")),
                      arms={a: _json(layout.metrics(a)) for a in score["arms"]},
                      forgetting=_json(layout.metrics("evaluate-forgetting")), score=score, heads=heads,
                      table=MeasurementTable.read(layout.measurements),
                      circuit_scores=read_table(layout.circuit_scores, CircuitScore),
                      prepared=_json(layout.metrics("prepare-data")) if layout.metrics("prepare-data").is_file() else {})


def run(ctx: StageContext, data) -> dict:
    from dcv.report.document import build

    t0 = time.perf_counter()
    with io.atomic_dir(ctx.layout.reports) as d:
        text, summary = build(data, d / "figures")
        io.write_text(d / "report.md", text)
        io.write_json(d / "summary.json", io.json_safe(summary))
    summary = io.json_safe(summary)
    ctx.run.log_final({**summary, "wall_s": round(time.perf_counter() - t0, 2)})
    ctx.run.log_artifacts(ctx.layout.reports, "report")
    return summary


def main(params: str) -> None:
    """Bad params, then missing inputs, stop the stage before anything is written (not even the MLflow run)."""
    from dcv.layout import Layout

    p, root = stage_params(params, "report", PARAMS)
    data = load_data(Layout(root), p)
    with stage("report", params, PARAMS) as ctx:
        run(ctx, data)
