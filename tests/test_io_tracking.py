"""Atomic outputs, the MLflow run contract, and a CLI that answers without heavy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dcv import io
from dcv.errors import DcvError


def test_atomic_dir_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "out"
    with io.atomic_dir(target) as d:
        (d / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(target) as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_temporaries_are_removed(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a writer that is gone (tests/test_bad_input.py: a live writer's temporaries stay)
    (tmp_path / f".tmp-out-{dead.pid}-abc").mkdir()
    with io.atomic_dir(tmp_path / "out") as d:
        (d / "x").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_json_is_canonical(tmp_path: Path):
    io.write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    io.write_json(tmp_path / "b.json", {"a": [1, 2], "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_stage_run_logs_to_sqlite(tmp_path: Path, monkeypatch):
    import mlflow

    from dcv.tracking import StageRun

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.txt").write_text("weights")
    with StageRun("base", "exp", tmp_path, {"base": {"lr": 0.1}}, {"dcv.stage": "base"}) as run:
        run.log_step(1, {"train": {"loss": 2.0}})
        run.log_step(2, {"train": {"loss": 1.0}})
        run.log_final({"capabilities": {"ioi": {"accuracy": 0.5}}, "curve": [1, 2]})
        run.log_artifacts(tmp_path / "m", "model")
        rid = run.run_id
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    r = client.get_run(rid)
    assert r.info.status == "FINISHED" and r.data.tags["dcv.stage"] == "base"
    assert r.data.params["base.lr"] == "0.1"
    assert r.data.metrics["capabilities.ioi.accuracy"] == 0.5
    assert [m.value for m in client.get_metric_history(rid, "train.loss")] == [2.0, 1.0]
    assert [a.path for a in client.list_artifacts(rid, "model")] == ["model/w.txt"]


def test_step_metrics_are_written_in_batches_and_all_by_the_runs_end(tmp_path: Path, monkeypatch):
    """One store write for the first step, then none until BATCH metrics wait or FLUSH_S passes; an interrupted
    stage still writes what waits, then ends KILLED."""
    import mlflow

    from dcv import tracking
    from dcv.tracking import StageRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(tracking, "BATCH", 10)
    writes = []
    real = mlflow.tracking.MlflowClient.log_batch

    def counted(self, run_id, metrics=(), **kw):
        if metrics:
            writes.append(len(metrics))
        return real(self, run_id, metrics=metrics, **kw)

    monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_batch", counted)
    with pytest.raises(KeyboardInterrupt):
        with StageRun("rl", "exp", tmp_path, {}, {"dcv.stage": "rl"}) as run:
            for step in range(1, 8):
                run.log_step(step, {"loss": 1.0 / step, "reward": step / 10})
            assert writes == [2, 10]  # step 1 at once; steps 2-6 when 10 metrics waited
            raise KeyboardInterrupt
    assert writes == [2, 10, 2]
    client = mlflow.tracking.MlflowClient(uri)
    assert client.get_run(run.run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run.run_id, "reward")] == list(range(1, 8))


def test_runs_record_their_process(tmp_path: Path, monkeypatch):
    import os

    import mlflow

    from dcv.tracking import StageRun, process_alive, process_start

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with StageRun("base", "exp", tmp_path, {}, {"dcv.stage": "base"}) as run:
        pass
    tags = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run.run_id).data.tags
    assert tags["dcv.pid"] == str(os.getpid()) and tags["dcv.root"] == str(tmp_path.resolve()) and tags["dcv.host"]
    assert process_alive(os.getpid(), process_start(os.getpid()))
    assert not process_alive(os.getpid(), "1")  # the same pid, another start time: a reused pid is not the run's


@pytest.mark.parametrize("uri", ["sqlite:////nonexistent-dir/x/mlflow.db", "http://127.0.0.1:9"])
def test_unreachable_store_fails_before_compute(tmp_path: Path, monkeypatch, uri):
    from dcv.tracking import StageRun

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(DcvError, match="MLflow tracking store .* cannot be reached or written"):
        with StageRun("base", "exp", tmp_path, {}, {}):
            pytest.fail("the stage body must not run")


def test_cli_help_imports_nothing_heavy():
    code = "import sys, stages.cli; print(sorted(m for m in ('torch','transformers','mlflow','trl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
