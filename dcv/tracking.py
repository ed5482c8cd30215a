"""One MLflow run per stage execution: tags, params, step metrics, final metrics and artifacts.

The tracking URI comes from MLFLOW_TRACKING_URI, else `sqlite:///<root>/mlflow.db` with an absolute path (DVC's
temporary experiment runs change the working directory; DVC_ROOT names the real repository root). The store is
opened and written before any compute, so an unreachable store fails the stage at once.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

from dcv.errors import DcvError


def store_root(root: Path) -> Path:
    """The repository root that holds the store: DVC_ROOT under DVC (temporary experiment copies), else `root`."""
    return Path(os.environ.get("DVC_ROOT") or root).resolve()


def default_uri(root: Path) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{store_root(root) / 'mlflow.db'}"


def _leaves(d: dict, prefix: str = ""):
    """(dotted key, value) of every non-dict leaf of a nested dict."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def flatten(d: dict) -> dict[str, float]:
    """Numeric leaves of a nested dict as dotted keys (lists are skipped: they are curves, logged by step)."""
    return {k: float(v) for k, v in _leaves(d)
            if isinstance(v, bool) or (isinstance(v, (int, float)) and math.isfinite(v))}


def flatten_params(d: dict) -> dict[str, str]:
    """Every leaf as a string param (non-strings as JSON)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in _leaves(d)}


def git_commit(root: Path) -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class StageRun:
    """An open MLflow run of one stage; use as a context manager (`with StageRun(...) as run:`)."""

    def __init__(self, stage: str, experiment: str, root: Path, params: dict[str, Any], tags: dict[str, str]):
        self.stage, self.experiment, self.root = stage, experiment, Path(root)
        self.params, self.tags = params, tags
        self.uri = default_uri(self.root)
        self._run = None
        self._children: list[ChildRun] = []

    def __enter__(self) -> "StageRun":
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        import logging

        logging.getLogger("alembic").setLevel(logging.WARNING)
        import mlflow

        try:
            if self.uri.startswith("sqlite:///"):
                db = Path(self.uri[len("sqlite:///"):])
                if not db.parent.is_dir():
                    raise OSError(f"directory {db.parent} does not exist")
                if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
                    raise OSError(f"{db} is not writable")
            mlflow.set_tracking_uri(self.uri)
            if mlflow.get_experiment_by_name(self.experiment) is None:
                # Artifacts beside the store, not under whatever directory the stage happens to run in.
                art = (store_root(self.root) / "mlartifacts").as_uri() if self.uri.startswith("sqlite:") else None
                mlflow.create_experiment(self.experiment, artifact_location=art)
            mlflow.set_experiment(self.experiment)
            self._run = mlflow.start_run(run_name=self.stage, tags=self.tags)
            mlflow.log_params(flatten_params(self.params))
        except Exception as e:  # any failure to reach or write the store ends the stage before compute
            if self._run is not None:
                mlflow.end_run(status="FAILED")
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DcvError(f"MLflow tracking store {self.uri}: cannot be reached or written ({msg[:300]})") from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import mlflow

        status = "FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED")
        for c in self._children:
            if not c.ended:
                c.end(status)
        mlflow.end_run(status=status)

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    def log_step(self, step: int, metrics: dict) -> None:
        import mlflow

        flat = flatten(metrics)
        if flat:
            mlflow.log_metrics(flat, step=step)

    def log_final(self, metrics: dict) -> None:
        """The same values as the stage's metrics JSON, as flat MLflow metrics."""
        import mlflow

        flat = flatten(metrics)
        for i in range(0, len(flat), 900):
            mlflow.log_metrics(dict(list(flat.items())[i : i + 900]))

    def log_artifacts(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

        path = Path(path)
        (mlflow.log_artifacts if path.is_dir() else mlflow.log_artifact)(str(path), artifact_path)

    def log_table(self, columns: dict[str, list], name: str) -> None:
        """A table (column name -> values) as an MLflow table artifact `name` (a .json file name)."""
        import mlflow

        if columns and any(columns.values()):
            mlflow.log_table(data=columns, artifact_file=name)

    def log_dict(self, obj: dict, name: str) -> None:
        import mlflow

        mlflow.log_dict(obj, name)

    def child(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> "ChildRun":
        """A nested run under this one (e.g. one per arm, so the UI compares arms run against run); it ends with
        this run unless ended before."""
        c = ChildRun(self, name, params, tags)
        self._children.append(c)
        return c


class ChildRun:
    """A run nested under a stage's run, written by id (the stage's own run stays the active one)."""

    def __init__(self, parent: StageRun, name: str, params: dict[str, Any], tags: dict[str, str]):
        import mlflow
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        self.client = mlflow.tracking.MlflowClient(parent.uri)
        run = self.client.create_run(parent._run.info.experiment_id, run_name=name,
                                     tags={**parent.tags, **tags, MLFLOW_PARENT_RUN_ID: parent.run_id,
                                           MLFLOW_RUN_NAME: name})
        self.run_id, self.ended = run.info.run_id, False
        flat = flatten_params(params)
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(self.run_id, params=items[i : i + 90])

    def log_step(self, step: int, metrics: dict) -> None:
        self._log(flatten(metrics), step)

    def log_final(self, metrics: dict) -> None:
        self._log(flatten(metrics), 0)

    def _log(self, flat: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in flat.items()]
        for i in range(0, len(items), 900):
            self.client.log_batch(self.run_id, metrics=items[i : i + 900])

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
        self.ended = True



class NullRun:
    """Stands in for a StageRun on the non-main processes of a distributed launch: only rank 0 tracks."""

    run_id = None

    def __enter__(self) -> "NullRun":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __getattr__(self, name: str):
        if name.startswith("log_") or name == "end":
            return lambda *a, **k: None
        if name == "child":
            return lambda *a, **k: NullRun()
        raise AttributeError(name)
