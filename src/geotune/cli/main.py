"""The `geotune` command: a thin layer over the Python API (geotune.engine, geotune.evaluation,
geotune.sweep, geotune.shift, geotune.adapt, geotune.report).

Every command's options are generated from its config model (geotune.cli.options), and every
error ends in ``main``. Exit codes are a contract:

- 0: success.
- 2: bad input; one line ``error: ...`` naming the option or file and the fix.
- 1: unexpected; one line ``error: unexpected ...`` naming a log file that holds the traceback.
- 130: Ctrl-C; 143: SIGTERM (a scheduler ending the job), handled exactly like Ctrl-C. One
  line says what was kept and how to continue (``geotune train --resume RUN`` for a run), and
  every run folder left behind records ``interrupted`` in its status.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from geotune.adapt.config import AdaptConfig
from geotune.cli.options import (
    config_option,
    given,
    model_signature,
    option,
    options_from,
    with_signature,
)
from geotune.cli.use import register
from geotune.config import TrainConfig, build_config
from geotune.errors import ConfigError, GeotuneError
from geotune.evaluation.evaluate import EvaluateConfig
from geotune.pretrain.config import PretrainConfig
from geotune.shift.measure import ShiftConfig
from geotune.shift.simulate import SimulateConfig
from geotune.sweep.config import CompareConfig

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Transfer learning and fine-tuning for remote-sensing scene classification.",
)
err_console = Console(stderr=True)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def train_command(**kwargs: Any) -> None:
    """Fine-tune a pretrained backbone on DATA/<class>/<image> chips, evaluate it, write a run folder."""
    from geotune.config import load_config
    from geotune.engine.trainer import refuse_train_outputs_in_inputs, resume, train
    from geotune.runs.metering import command_started

    config_file, resume_dir = kwargs.pop("config"), kwargs.pop("resume")
    values = given(kwargs)
    if resume_dir is not None:
        if values or config_file:
            raise ConfigError("--resume takes no other options: the run's own config.yaml is used")
        result = resume(resume_dir, err_console)
    else:
        config = (
            load_config(config_file, **values)
            if config_file
            else build_config(TrainConfig, **values)
        )
        refuse_train_outputs_in_inputs(config, **{"--config": config_file})
        result = train(config, err_console, started=command_started())
    m = result.test_metrics
    if not m:
        return  # a non-lead DDP process: the lead process reports
    if m.get("multilabel"):
        typer.echo(
            f"test mAP {100 * m['map_macro']:.2f}% macro, {100 * m['map_micro']:.2f}% micro "
            f"(F1 micro {100 * m['f1_micro']:.2f}%, subset accuracy "
            f"{100 * m['subset_accuracy']:.2f}%) on {m['n']} images"
        )
    else:
        typer.echo(
            f"test overall accuracy {100 * m['overall_accuracy']:.2f}% "
            f"(AA {100 * m['average_accuracy']:.2f}%, kappa {m['kappa']:.4f}) on {m['n']} images"
        )
    typer.echo(f"run folder: {result.run_dir}")
    per = (
        "per label: test_per_label.csv"
        if m.get("multilabel")
        else ("per class: test_per_class.csv, confusion: test_confusion.csv")
    )
    typer.echo(f"metrics: {result.run_dir / 'test_metrics.json'} ({per})")
    if (result.run_dir / "report.html").is_file():
        typer.echo(f"report: {result.run_dir / 'report.html'}")


app.command("train")(
    with_signature(
        train_command,
        model_signature(
            TrainConfig,
            extra=[
                option("config", Path, "YAML file of options; flags override it"),
                option("resume", Path, "continue the killed run RUN_DIR from its last epoch"),
            ],
        ),
    )
)


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------
def evaluate_command(**kwargs: Any) -> None:
    """Re-evaluate a finished run on its test split, or on another dataset (cross-dataset)."""
    from geotune.evaluation.evaluate import evaluate_run

    cfg = options_from(EvaluateConfig, kwargs)
    metrics, out = evaluate_run(**cfg.model_dump(), console=err_console)
    if metrics.get("multilabel"):
        m = metrics["map_macro"]
        typer.echo(
            f"mAP (macro) {'-' if m is None else f'{100 * m:.2f}%'}, F1 macro "
            f"{100 * metrics['f1_macro']:.2f}% on {metrics['n']} chips"
        )
    else:
        typer.echo(
            f"overall accuracy {100 * metrics['overall_accuracy']:.2f}% on {metrics['n']} images"
        )
    if metrics.get("drop_vs_in_domain") is not None:
        typer.echo(
            f"drop vs in-domain test accuracy: {100 * metrics['drop_vs_in_domain']:.2f} points"
        )
    typer.echo(f"metrics: {out / 'eval_metrics.json'}")


app.command("evaluate")(
    with_signature(
        evaluate_command,
        model_signature(EvaluateConfig, positional=["run_dir"], extra=[config_option()]),
    )
)


# ---------------------------------------------------------------------------------------------
# backbones, report
# ---------------------------------------------------------------------------------------------
@app.command("backbones")
def backbones_command(
    all_models: Annotated[
        bool, typer.Option("--all", help="every timm model with pretrained weights")
    ] = False,
    filter_: Annotated[
        str | None, typer.Option("--filter", help="wildcard pattern, e.g. '*resnet*'")
    ] = None,
) -> None:
    """List backbones, their weight sources, and whether each is usable right now."""
    from fnmatch import fnmatch

    from rich.table import Table

    from geotune.models.backbones import backbone_status

    if filter_ is not None and not filter_.strip():
        raise ConfigError("--filter is empty; give a wildcard pattern, e.g. '*resnet*'")
    rows = backbone_status(all_models=all_models, pattern=filter_)
    if filter_ is not None and not any(fnmatch(r["backbone"], filter_) for r in rows):
        raise ConfigError(
            f"no backbone matches --filter '{filter_}'; try a wider pattern, e.g. '*resnet*'"
        )
    table = Table(title="backbones (any timm model name works; --weights PATH loads a local file)")
    for col in ("backbone", "weights", "status", "notes"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["backbone"], r["weights"], r["status"], r["notes"])
    Console().print(table)


@app.command("report")
def report_command(
    folder: Annotated[Path, typer.Argument(help="a run folder or a compare sweep folder")],
) -> None:
    """(Re)generate report.html and report.md for a run or a compare sweep."""
    from geotune.report.reports import write_report

    typer.echo(f"report: {write_report(folder)}")


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------
def compare_command(**kwargs: Any) -> None:
    """Run strategies x label budgets x seeds on one dataset; write results, statistics and a report."""
    from geotune.config import load_yaml_mapping
    from geotune.sweep.compare import refuse_compare_outputs_in_inputs, run_compare
    from geotune.sweep.config import make_compare_config

    config_file = kwargs.pop("config")
    train_options = load_yaml_mapping(config_file) if config_file is not None else {}
    cfg = make_compare_config(**given(kwargs), train=train_options)
    refuse_compare_outputs_in_inputs(cfg, **{"--config": config_file})
    sweep = run_compare(cfg, err_console)
    results = json.loads((sweep / "results.json").read_text())
    for line in results["recommendation"]:
        typer.echo(line)
    typer.echo(f"sweep folder: {sweep}")
    typer.echo(f"results: {sweep / 'results.csv'}; report: {sweep / 'report.html'}")


app.command("compare")(
    with_signature(
        compare_command,
        model_signature(
            CompareConfig,
            skip=["train"],
            extra=[option("config", Path, "YAML of `geotune train` options for every run")],
        ),
    )
)


# ---------------------------------------------------------------------------------------------
# simulate, shift
# ---------------------------------------------------------------------------------------------
def simulate_command(**kwargs: Any) -> None:
    """Write a copy of a dataset with a simulated sensor, season or haze shift."""
    from geotune.shift.simulate import simulate_folder

    c = options_from(SimulateConfig, kwargs)
    out = simulate_folder(
        c.src, c.dst, c.shift, c.strength, c.seed, c.per_class, c.split, c.part,
        console=err_console,
    )  # fmt: skip
    typer.echo(f"shifted copy: {out}")


app.command("simulate")(
    with_signature(
        simulate_command,
        model_signature(SimulateConfig, positional=["src", "dst"], extra=[config_option()]),
    )
)


def shift_command(**kwargs: Any) -> None:
    """Measure the domain shift between two datasets: MMD, Frechet distance, domain classifier."""
    from geotune.shift.measure import describe, measure_shift

    cfg = options_from(ShiftConfig, kwargs)
    result, out = measure_shift(**cfg.run_kwargs(), console=err_console)
    typer.echo(describe(result))
    typer.echo(f"report: {out / 'shift.md'}; embedding: {out / 'embedding.png'}")


app.command("shift")(
    with_signature(
        shift_command, model_signature(ShiftConfig, positional=["a", "b"], extra=[config_option()])
    )
)


# ---------------------------------------------------------------------------------------------
# adapt
# ---------------------------------------------------------------------------------------------
def adapt_command(**kwargs: Any) -> None:
    """Adapt a run to unlabelled target data; one new run per method, with before/after,
    label-free harm signals, and the method to keep without target labels."""
    from geotune.adapt.choose import adapt_methods
    from geotune.adapt.config import make_adapt_config
    from geotune.validation import load_yaml_mapping

    run_dir, config_file = kwargs.pop("run_dir"), kwargs.pop("config")
    values = load_yaml_mapping(config_file) if config_file is not None else {}
    values.update(given(kwargs))
    method = values.pop("method", "adabn")
    if isinstance(method, str):
        method = method.split(",")
    if not isinstance(method, list) or not all(isinstance(m, str) for m in method):
        raise ConfigError(f"bad value for 'method': expected method names, got {method!r}")
    methods = [m.strip() for m in method if m.strip()]
    if not methods:
        raise ConfigError("bad value for 'method': empty; name a method, e.g. --method adabn")
    configs = [make_adapt_config(method=m, **values) for m in methods]
    summaries, choice, table = adapt_methods(run_dir, configs, err_console)
    for s in summaries:
        typer.echo(f"{s['method']}: {s['run']}")
    typer.echo(table.read_text())
    typer.echo(f"comparison: {table}")


def _adapt_signature():
    import inspect

    run_dir = inspect.Parameter(
        "run_dir",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        annotation=Annotated[Path, typer.Argument(help="a finished run to adapt")],
    )
    sig = model_signature(AdaptConfig, extra=[config_option()])
    return sig.replace(parameters=[run_dir, *sig.parameters.values()])


app.command("adapt")(with_signature(adapt_command, _adapt_signature()))


# ---------------------------------------------------------------------------------------------
# pretrain
# ---------------------------------------------------------------------------------------------
def pretrain_command(**kwargs: Any) -> None:
    """Continue a backbone's pretraining on unlabelled chips (self-supervised); writes a
    checkpoint for `geotune train --weights`."""
    from geotune.pretrain.run import pretrain

    cfg = options_from(PretrainConfig, kwargs)
    record = pretrain(cfg, err_console)
    typer.echo(
        f"checkpoint: {cfg.output} ({record['method']}, {record['steps']} steps on "
        f"{record['chips']} chips)"
    )
    typer.echo(
        f"use it: geotune train --data DATA --backbone {cfg.backbone} --weights {cfg.output}"
    )


def _pretrain_methods_help() -> str:
    from geotune.pretrain.methods import SSL_METHODS

    return "; ".join(f"{k}: {m.description}" for k, m in SSL_METHODS.items())


app.command("pretrain")(
    with_signature(
        pretrain_command,
        model_signature(
            PretrainConfig,
            positional=["data"],
            extra=[config_option()],
            help_overrides={"method": _pretrain_methods_help()},
        ),
    )
)


# ---------------------------------------------------------------------------------------------
# predict, export (geotune.cli.use)
# ---------------------------------------------------------------------------------------------
register(app)


# ---------------------------------------------------------------------------------------------
# one handler for every error
# ---------------------------------------------------------------------------------------------
def _log_traceback() -> Path | None:
    """Write the current exception's traceback to a log file; its path, or None if unwritable."""
    text = f"geotune {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}"
    name = f"geotune-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (Path.home() / ".cache" / "geotune" / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return None


def _fail(message: str, code: int) -> None:
    # The message is text, not markup: paths, class names and library errors hold brackets.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _terminate(signum, frame) -> None:
    from geotune.runs.interrupt import Terminated

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean-up, even if the signal repeats
    raise Terminated()


def _interrupted() -> None:
    from geotune.runs.interrupt import kept_note, was_terminated

    terminated = was_terminated()
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    note = kept_note() or (
        "nothing was left half-written (outputs are written only when complete); "
        "run the command again"
    )
    err_console.print(f"{what}: {note}", highlight=False, soft_wrap=True, markup=False)
    sys.exit(143 if terminated else 130)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors end here (one line each, never a bare traceback)."""
    from geotune.runs.interrupt import clear

    clear()
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread: leave SIGTERM alone
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        _run(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str] | None) -> None:
    try:
        code = app(args=argv, standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C (and our SIGTERM) into the exit code 130
            _interrupted()
        if isinstance(code, int) and code:
            sys.exit(code)
    except GeotuneError as err:
        _fail(str(err), 2)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.TyperException as err:  # usage errors: unknown option, unparsable value
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        _fail(" ".join(message.split()) + " (see --help)", 2)
    except (KeyboardInterrupt, typer.Abort):  # other typer / click versions
        _interrupted()
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line and a log
        log = _log_traceback()
        where = f"; traceback in {log}" if log else ""
        _fail(f"unexpected {type(err).__name__}: {' '.join(str(err).split())}{where}", 1)


if __name__ == "__main__":
    main()
