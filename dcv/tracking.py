"""One MLflow run per stage execution: tags, params, step metrics, final metrics and artifacts.

The tracking URI comes from MLFLOW_TRACKING_URI, else `sqlite:///<root>/mlflow.db` with an absolute path (DVC's
temporary experiment runs change the working directory; DVC_ROOT names the real repository root). The store is
opened and written before any compute, so an unreachable store fails the stage at once.

A run records the process that owns it (tags `dcv.host`, `dcv.pid`, `dcv.pid_start`, `dcv.root`). A process that
dies without ending its run (SIGKILL, power loss) leaves it RUNNING; the next run of the same stage marks every such
run of that stage whose process is gone FAILED (tag `dcv.closed`), child runs included, and refuses to start while a
live process runs the same stage in the same repository. Runs on other hosts are left alone: their processes cannot
be seen from here.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from dcv.errors import DcvError, uninterruptible

FLUSH_S = 10.0  # step metrics wait in memory at most this long: one store write per ~10 s, not one per step
BATCH = 900  # metrics per store write (MLflow's log_batch takes at most 1000)


def _whole(write):
    """A store write that a signal does not cut in half: the interruption is raised when the write is done."""
    import functools

    @functools.wraps(write)
    def whole(*args, **kwargs):
        with uninterruptible():
            return write(*args, **kwargs)

    return whole


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


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, /proc/<pid>/stat field 22), None where /proc is
    absent or the process is gone; with the pid it names a process even when pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None) -> bool:
    """Whether the process `pid` that started at `start` (see `process_start`) still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return not Path("/proc/self/stat").exists()  # no /proc: kill(pid, 0) is all we know
    return state != "Z" and (start is None or process_start(pid) == start)


def owner_tags(root: Path) -> dict[str, str]:
    """Tags naming the process that owns a run, so that a later run can tell whether it is gone."""
    pid = os.getpid()
    return {"dcv.host": socket.gethostname(), "dcv.pid": str(pid), "dcv.pid_start": process_start(pid) or "",
            "dcv.root": str(Path(root).resolve())}


def _store_error(uri: str, e: Exception) -> DcvError:
    """The cause in one line, whole: a file store this MLflow refuses is said as such, with the way to opt in."""
    text = str(e).strip()
    if "MLFLOW_ALLOW_FILE_STORE" in text:
        import mlflow

        return DcvError(f"MLflow tracking store {uri}: MLflow {mlflow.__version__} refuses file stores (it keeps them "
                        f"in maintenance mode): use a database, e.g. unset MLFLOW_TRACKING_URI for the default "
                        f"sqlite:///<repo>/mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true to opt in")
    msg = " ".join(text.split()) if text else type(e).__name__
    return DcvError(f"MLflow tracking store {uri}: cannot be reached or written ({msg})")


def _check_sqlite(uri: str) -> None:
    db = Path(uri[len("sqlite:///"):])
    if not db.parent.is_dir():
        raise OSError(f"directory {db.parent} does not exist")
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise OSError(f"{db} is not writable")


def check_store(root: Path) -> str:
    """That the tracking store of `root` can take runs, without writing to it (a sqlite file is not created);
    returns its URI, raises DcvError saying why not."""
    uri = default_uri(root)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        if uri.startswith("sqlite:///"):
            _check_sqlite(uri)
        else:
            import mlflow

            mlflow.tracking.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001
        raise _store_error(uri, e) from None
    return uri


def _running(runs: list[tuple[str, dict]], host: str):
    """(run id, tags, pid, alive) of each RUNNING run (given as (run id, tags)) that records its process on `host`
    (runs of other hosts, or written before runs recorded their process, cannot be told apart and are left out)."""
    for run_id, t in runs:
        if t.get("dcv.host") == host and t.get("dcv.pid", "").isdigit():
            pid = int(t["dcv.pid"])
            yield run_id, t, pid, pid != os.getpid() and process_alive(pid, t.get("dcv.pid_start") or None)


def _running_runs(client, experiment_id: str, stage: str) -> list[tuple[str, dict]]:
    runs = client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.`dcv.stage` = '{stage}'",
                              max_results=10_000)
    return [(r.info.run_id, r.data.tags) for r in runs]


def _running_runs_sqlite(db: Path, experiment: str, stage: str) -> list[tuple[str, dict]]:
    """The same as `_running_runs`, read straight from a sqlite store (read only, without importing MLflow, which
    takes seconds: a stage refused for running twice is refused at once)."""
    import sqlite3

    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        ids = [r[0] for r in con.execute(
            "SELECT r.run_uuid FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
            "JOIN tags t ON t.run_uuid = r.run_uuid WHERE e.name = ? AND r.status = 'RUNNING' "
            "AND r.lifecycle_stage = 'active' AND t.key = 'dcv.stage' AND t.value = ?", (experiment, stage))]
        out = []
        for rid in ids:
            out.append((rid, dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (rid,)).fetchall())))
        return out
    finally:
        con.close()


def _refuse_if_ours(run_id: str, tags: dict, pid: int, stage: str, root: str) -> None:
    if tags.get("dcv.root") == root and "mlflow.parentRunId" not in tags:
        raise DcvError(f"stage {stage} is already running in {root} (pid {pid}, MLflow run {run_id}): "
                       f"wait for it to end or stop it (kill {pid})")


def refuse_concurrent(stage: str, experiment: str, root: Path) -> None:
    """A DcvError when a live process on this host runs `stage` in this repository (read only: a store that does
    not exist yet is not created; the stage's run checks again when it opens)."""
    uri = default_uri(root)
    runs = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            return
        try:
            runs = _running_runs_sqlite(db, experiment, stage)
        except Exception:  # noqa: BLE001  (another schema: ask MLflow)
            runs = None
    if runs is None:
        import mlflow

        try:
            client = mlflow.tracking.MlflowClient(uri)
            exp = client.get_experiment_by_name(experiment)
            runs = _running_runs(client, exp.experiment_id, stage) if exp else []
        except Exception as e:  # noqa: BLE001
            raise _store_error(uri, e) from None
    for run_id, tags, pid, alive in _running(runs, socket.gethostname()):
        if alive:
            _refuse_if_ours(run_id, tags, pid, stage, str(Path(root).resolve()))


class StageRun:
    """An open MLflow run of one stage; use as a context manager (`with StageRun(...) as run:`)."""

    def __init__(self, stage: str, experiment: str, root: Path, params: dict[str, Any], tags: dict[str, str]):
        self.stage, self.experiment, self.root = stage, experiment, Path(root)
        self.params, self.tags = params, {**tags, **owner_tags(self.root)}
        self.uri = default_uri(self.root)
        self._run = None
        self._children: list[ChildRun] = []
        self.closed: list[str] = []  # ids of the stale runs this run marked FAILED

    def __enter__(self) -> "StageRun":
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        import logging

        logging.getLogger("alembic").setLevel(logging.WARNING)
        import mlflow

        try:
            if self.uri.startswith("sqlite:///"):
                _check_sqlite(self.uri)
            mlflow.set_tracking_uri(self.uri)
            exp = mlflow.get_experiment_by_name(self.experiment)
            if exp is None:
                # Artifacts beside the store, not under whatever directory the stage happens to run in.
                art = (store_root(self.root) / "mlartifacts").as_uri() if self.uri.startswith("sqlite:") else None
                mlflow.create_experiment(self.experiment, artifact_location=art)
            else:
                self._close_stale(mlflow.tracking.MlflowClient(self.uri), exp.experiment_id)
            mlflow.set_experiment(self.experiment)
            self._run = mlflow.start_run(run_name=self.stage, tags=self.tags)
            self._steps = StepMetrics(mlflow.tracking.MlflowClient(self.uri), self._run.info.run_id)
            mlflow.log_params(flatten_params(self.params))
        except DcvError:
            raise
        except Exception as e:  # any failure to reach or write the store ends the stage before compute
            if self._run is not None:
                mlflow.end_run(status="FAILED")
            raise _store_error(self.uri, e) from None
        if self.closed:
            mlflow.set_tag("dcv.closed_stale", ",".join(self.closed))
        return self

    def _close_stale(self, client, experiment_id: str) -> None:
        """Mark FAILED the RUNNING runs of this stage (and their child runs) whose process on this host is gone;
        refuse to start while a live process runs this stage in this repository."""
        host = self.tags["dcv.host"]
        for run_id, tags, pid, alive in _running(_running_runs(client, experiment_id, self.stage), host):
            if alive:
                _refuse_if_ours(run_id, tags, pid, self.stage, self.tags["dcv.root"])
                continue
            client.set_tag(run_id, "dcv.closed", f"process {pid} on {host} was gone when a later run of stage "
                                                 f"{self.stage} started (pid {os.getpid()})")
            client.set_terminated(run_id, "FAILED")
            self.closed.append(run_id)

    def __exit__(self, exc_type, exc, tb) -> None:
        import mlflow

        status = "FINISHED" if exc_type is None else ("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
        try:
            self.flush()
            for c in self._children:
                if not c.ended:
                    c.end(status)
            mlflow.end_run(status=status)
        except Exception as e:  # noqa: BLE001  (the store failing now must not hide the stage's own error)
            import sys

            print(f"warning: MLflow run {self.run_id} of stage {self.stage} could not be marked {status} "
                  f"({' '.join(str(e).split())}); the next run of the stage closes it", file=sys.stderr)
            if exc_type is None:
                raise

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    def log_step(self, step: int, metrics: dict) -> None:
        self._steps.add(flatten(metrics), step)

    def flush(self) -> None:
        """Write the step metrics still held in memory."""
        self._steps.flush()

    @_whole
    def log_final(self, metrics: dict) -> None:
        """The same values as the stage's metrics JSON, as flat MLflow metrics."""
        import mlflow

        self.flush()
        flat = flatten(metrics)
        for i in range(0, len(flat), BATCH):
            mlflow.log_metrics(dict(list(flat.items())[i : i + BATCH]))

    @_whole
    def log_artifacts(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

        path = Path(path)
        (mlflow.log_artifacts if path.is_dir() else mlflow.log_artifact)(str(path), artifact_path)

    @_whole
    def log_table(self, columns: dict[str, list], name: str) -> None:
        """A table (column name -> values) as an MLflow table artifact `name` (a .json file name)."""
        import mlflow

        if columns and any(columns.values()):
            mlflow.log_table(data=columns, artifact_file=name)

    @_whole
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

    @_whole
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
        self._steps = StepMetrics(self.client, self.run_id)

    def log_step(self, step: int, metrics: dict) -> None:
        self._steps.add(flatten(metrics), step)

    def log_final(self, metrics: dict) -> None:
        self._steps.add(flatten(metrics), 0)
        self._steps.flush()

    @_whole
    def end(self, status: str = "FINISHED") -> None:
        self._steps.flush()
        self.client.set_terminated(self.run_id, status)
        self.ended = True


class StepMetrics:
    """Metrics of one run by step, written in batches: at once for the first, then when BATCH are pending or FLUSH_S
    has passed since the last write, and on `flush` (the run's end, killed or not). Measured on the toy world's GRPO
    (about 20 metrics a step): 150 steps took 47.6 s with a write per step, 47.0 s batched."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self.pending: list = []
        self.written = -math.inf  # time.monotonic() of the last write

    def add(self, flat: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending.extend(Metric(k, v, now, step) for k, v in flat.items())
        if len(self.pending) >= BATCH or time.monotonic() - self.written >= FLUSH_S:
            self.flush()

    @_whole
    def flush(self) -> None:
        import time

        pending, self.pending = self.pending, []
        for i in range(0, len(pending), BATCH):
            self.client.log_batch(self.run_id, metrics=pending[i : i + BATCH])
        self.written = time.monotonic()



class NullRun:
    """Stands in for a StageRun on the non-main processes of a distributed launch: only rank 0 tracks."""

    run_id = None

    def __enter__(self) -> "NullRun":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __getattr__(self, name: str):
        if name.startswith("log_") or name in ("end", "flush"):
            return lambda *a, **k: None
        if name == "child":
            return lambda *a, **k: NullRun()
        raise AttributeError(name)
