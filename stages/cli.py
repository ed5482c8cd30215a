"""The `dcv` command: `dcv stage <name>` runs one pipeline stage, as `dvc repro` does.

Heavy libraries (torch, transformers, mlflow) are imported inside commands, so `dcv --help` answers at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

import typer

# One progress bar per stage and seed is ours to print; the hub's and transformers' bars ("Loading weights", once
# per model loaded) are off unless the user asks for them.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Differential circuit vulnerability: which circuits does fine-tuning break?")
stage_app = typer.Typer(no_args_is_help=True, help="Run one pipeline stage (what `dvc repro` calls).")
app.add_typer(stage_app, name="stage")
sweep_app = typer.Typer(no_args_is_help=True, help="The Pareto sweep with DVC experiments (README, Sweeps).")
app.add_typer(sweep_app, name="sweep")
profile_app = typer.Typer(no_args_is_help=True, help="Named params overrides (profiles/<name>.yaml), e.g. the study's setting.")
app.add_typer(profile_app, name="profile")

_state = {"debug": False}
ParamsOpt = typer.Option("params.yaml", "--params", "-p", help="Params file (its directory is the repository root).")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error.")) -> None:
    _state["debug"] = debug


def _on_signal(signum, frame) -> None:
    """SIGTERM (a job scheduler, `docker stop`) is handled as Ctrl-C: raised as `Interrupted` where the process is,
    so temporaries are removed and the MLflow run is marked KILLED; inside a store write, when the write is done
    (`dcv.errors.uninterruptible`). Further signals are ignored while that cleanup runs (a scheduler sends SIGKILL
    after its grace period anyway)."""
    from dcv.errors import interrupt

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    interrupt(signum)


def _call(fn: Callable[[], None]) -> None:
    """Run a stage; any error becomes one line on stderr and exit code 2 (full traceback with --debug); SIGINT and
    SIGTERM end it with 130 and 143."""
    from dcv.errors import DcvError, Interrupted

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    try:
        _profiled(fn)
    except KeyboardInterrupt as e:
        code = e.exit_code if isinstance(e, Interrupted) else 130
        typer.echo(f"error: interrupted ({e if isinstance(e, Interrupted) else 'SIGINT'})", err=True)
        raise typer.Exit(code) from None
    except DcvError as e:
        if _state["debug"]:
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except Exception as e:  # noqa: BLE001
        if _state["debug"]:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        typer.echo(f"error: {type(e).__name__}: {first} (rerun with --debug for the traceback)", err=True)
        raise typer.Exit(2) from None
    finally:
        for s, handler in previous.items():  # as they were (the CLI may be called in-process, e.g. by tests)
            signal.signal(s, handler)


def _profiled(fn: Callable[[], None]) -> None:
    """Run `fn`; with `DCV_PROFILE=FILE` in the environment, under cProfile, its stats dumped to FILE (what
    `bench/pipeline.py --profile STAGE` reads)."""
    path = os.environ.get("DCV_PROFILE")
    if not path:
        return fn()
    import cProfile

    prof = cProfile.Profile()
    try:
        prof.runcall(fn)
    finally:
        prof.dump_stats(path)


@profile_app.command("list")
def profile_list(params: str = ParamsOpt) -> None:
    """The profiles of this repository (profiles/*.yaml) and what each is."""
    from stages import profile as s

    _call(lambda: s.main(params, None, [], False))


@profile_app.command("apply")
def profile_apply(name: str = typer.Argument(..., help="Profile name: profiles/<name>.yaml."),
                  sets: list[str] = typer.Option([], "--set", "-S", help="KEY=VALUE after the profile (YAML value)."),
                  dry_run: bool = typer.Option(False, "--dry-run", help="Validate and list the keys; write nothing."),
                  params: str = ParamsOpt) -> None:
    """Merge a profile (then each -S) into params.yaml, comments kept; validated as the stages will, before writing."""
    from stages import profile as s

    _call(lambda: s.main(params, name, sets, dry_run))


@app.command("check")
def check(params: str = ParamsOpt) -> None:
    """Validate params.yaml and what it implies (tokenizer, target rows, corpus lines, model shapes, LoRA modules,
    the tracking store) for every stage, before anything runs; `make run` calls it before `dvc repro`."""
    from stages import check as s

    _call(lambda: s.main(params))


@stage_app.command("prepare-data")
def prepare_data(params: str = ParamsOpt) -> None:
    """Tokenizer and pretraining corpus (toy), target train/eval splits, probe pairs per capability."""
    from stages import prepare_data as s

    _call(lambda: s.main(params))


@stage_app.command("base")
def base(params: str = ParamsOpt) -> None:
    """Pretrain the toy base (base.kind: toy) or load a Hugging Face model (base.kind: hf) into models/base."""
    from stages import base as s

    _call(lambda: s.main(params))


def _arm_command(name: str, help_text: str) -> None:
    def command(params: str = ParamsOpt) -> None:
        from stages import arms

        _call(lambda: arms.main(name, params))

    stage_app.command(name, help=help_text)(command)


def _register_arms() -> None:
    """One command per registered arm (`dcv stage sft`, ...): the registry is read without importing torch."""
    from dcv.arms import REGISTRY

    for name, arm in REGISTRY.items():
        doc = (arm.config.__doc__ or "").strip().splitlines()[0]
        _arm_command(name, f"Arm {name}: {doc} Writes models/{name}, metrics/{name}.json.")


_register_arms()


@stage_app.command("extract-circuits")
def extract_circuits(
    params: str = ParamsOpt,
    model: str = typer.Option(None, "--model", help="By hand: measure this model dir (or cached hub id) only."),
    capability: list[str] = typer.Option(None, "--capability", help="By hand: probe set(s) of data/prepared/probes (default: all)."),
    probes: str = typer.Option(None, "--probes", help="By hand: a probe JSONL file instead of --capability."),
    base: str = typer.Option(None, "--base", help="By hand: the base to compare with (default: models/base for this repo's models)."),
    out: str = typer.Option("circuits-by-hand", "--out", help="By hand: where the JSON and PNG go."),
) -> None:
    """Head effects, circuits and faithfulness of every model and capability: circuits/, metrics/extract-circuits.json."""
    from stages import extract_circuits as s

    _call(lambda: s.main(params, model, capability or None, probes, base, out))


@stage_app.command("score-dcv")
def score_dcv(params: str = ParamsOpt) -> None:
    """Circuit vulnerability per model and DCV = CV^sft - CV^rl with bootstrap CIs: metrics/score-dcv.json, plots/dcv."""
    from stages import score_dcv as s

    _call(lambda: s.main(params))


@stage_app.command("evaluate-forgetting")
def evaluate_forgetting(params: str = ParamsOpt) -> None:
    """Prior-capability accuracy, target accuracy and forward KL of every checkpoint: metrics/evaluate-forgetting.json."""
    from stages import evaluate_forgetting as s

    _call(lambda: s.main(params))


@stage_app.command("report")
def report(params: str = ParamsOpt) -> None:
    """reports/report.md: setup, figures and a verdict computed from the metrics."""
    from stages import report as s

    _call(lambda: s.main(params))


@sweep_app.command("queue")
def sweep_queue(
    spec: str = typer.Option("sweeps/pareto.yaml", "--spec", help="The sweep: seeds, learning rates per arm, overrides."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the `dvc exp run --queue` commands only."),
) -> None:
    """Queue one DVC experiment per learning rate of the spec (then: dvc queue start -j 1)."""
    from stages import sweep as s

    _call(lambda: s.queue(spec, dry_run))


@sweep_app.command("report")
def sweep_report(
    out: str = typer.Option("sweep", "--out", help="Directory of report.md, pareto.png, runs.csv, summary.json."),
    exp_json: str = typer.Option(None, "--exp-json", help="A saved `dvc exp show --json` instead of running it."),
    all_commits: bool = typer.Option(False, "--all-commits", help="Experiments of every commit (dvc exp show -A)."),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", help="Run resamples for the R² intervals."),
    seed: int = typer.Option(0, "--seed", help="Seed of the resampling."),
) -> None:
    """The frontier of target against prior accuracy per arm and the R² table over every run of the sweep."""
    from pathlib import Path

    from stages import sweep as s

    _call(lambda: print(s.report(Path.cwd(), Path(out).resolve(), exp_json, all_commits, n_bootstrap, seed)))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
