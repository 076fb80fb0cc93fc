"""The `geotune` command: a thin layer over the Python API (geotune.train, geotune.evaluate, ...).

`geotune train` options are generated from ``TrainConfig``'s fields, so a YAML key, a CLI flag and
a key of the saved config.yaml are always the same name.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from geotune.config import TrainConfig
from geotune.errors import GeotuneError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Transfer learning and fine-tuning for remote-sensing scene classification.",
)
err_console = Console(stderr=True)


def _cli_type(annotation: Any) -> Any:
    """Map a config field type onto a type typer can parse; pydantic validates values after."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return _cli_type(args[0])
    if origin is typing.Literal:
        return str
    if origin is tuple:
        return tuple[tuple(args)]
    if origin in (list, dict):
        return str  # comma-separated on the command line; parsed by the config's validators
    return annotation


def _train_signature() -> inspect.Signature:
    def param(name: str, typ: Any, option: Any) -> inspect.Parameter:
        return inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[typ | None, option],
            default=None,
        )

    params = [
        param(
            "config", Path, typer.Option("--config", help="YAML file of options; flags override it")
        ),
        param(
            "resume",
            Path,
            typer.Option("--resume", help="continue the killed run RUN_DIR from its last epoch"),
        ),
    ]
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        typ = _cli_type(field.annotation)
        help_text = field.description or ""
        if typ is bool:
            option = typer.Option(f"{flag}/--no-{flag[2:]}", help=help_text)
        else:
            choices = (
                typing.get_args(field.annotation)
                if typing.get_origin(field.annotation) is typing.Literal
                else ()
            )
            if choices:
                help_text = f"{help_text} [{' | '.join(choices)}]".strip()
            option = typer.Option(flag, help=help_text)
        default = field.default if field.is_required() is False else None
        if default is not None and not isinstance(default, Path):
            option.help = f"{option.help} (default: {list(default) if isinstance(default, tuple) else default})".strip()
        params.append(param(name, typ, option))
    return inspect.Signature(params)


def train_command(**kwargs: Any) -> None:
    """Fine-tune a pretrained backbone on DATA/<class>/<image> chips, evaluate it, write a run folder."""
    from geotune.config import load_config, make_config
    from geotune.train import resume, train

    config_file = kwargs.pop("config")
    resume_dir = kwargs.pop("resume")
    values = {k: v for k, v in kwargs.items() if v is not None}
    if resume_dir is not None:
        if values or config_file:
            from geotune.errors import ConfigError

            raise ConfigError("--resume takes no other options: the run's own config.yaml is used")
        result = resume(resume_dir, err_console)
    else:
        config = load_config(config_file, **values) if config_file else make_config(**values)
        result = train(config, err_console)
    m = result.test_metrics
    if not m:
        return  # a non-lead DDP process: the lead process reports
    typer.echo(
        f"test overall accuracy {100 * m['overall_accuracy']:.2f}% (AA {100 * m['average_accuracy']:.2f}%, "
        f"kappa {m['kappa']:.4f}) on {m['n']} images"
    )
    typer.echo(f"run folder: {result.run_dir}")
    typer.echo(
        f"metrics: {result.run_dir / 'test_metrics.json'} (per class: test_per_class.csv, confusion: test_confusion.csv)"
    )
    if (result.run_dir / "report.html").is_file():
        typer.echo(f"report: {result.run_dir / 'report.html'}")


train_command.__signature__ = _train_signature()  # type: ignore[attr-defined]
app.command("train")(train_command)


@app.command("evaluate")
def evaluate_command(
    run_dir: Annotated[Path, typer.Argument(help="a run folder written by `geotune train`")],
    data: Annotated[
        Path | None, typer.Option(help="another ImageFolder dataset with the same classes")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    tta: Annotated[
        str, typer.Option(help="test-time augmentation: none | flip | rot2 | rot4 | d4")
    ] = "none",
    class_map: Annotated[
        Path | None,
        typer.Option(help="YAML 'their_class: model_class' pairs for --data (many-to-one ok)"),
    ] = None,
) -> None:
    """Re-evaluate a finished run on its test split, or on another dataset (cross-dataset)."""
    from geotune.augment import TTA_VIEWS
    from geotune.errors import ConfigError
    from geotune.evaluate import evaluate_run

    if tta not in TTA_VIEWS:
        raise ConfigError(f"bad value for 'tta': {tta!r}; use one of {', '.join(TTA_VIEWS)}")
    metrics, out = evaluate_run(
        run_dir, data, batch_size, device, tta=tta, console=err_console, class_map=class_map
    )
    typer.echo(
        f"overall accuracy {100 * metrics['overall_accuracy']:.2f}% on {metrics['n']} images"
    )
    if metrics.get("drop_vs_in_domain") is not None:
        typer.echo(
            f"drop vs in-domain test accuracy: {100 * metrics['drop_vs_in_domain']:.2f} points"
        )
    typer.echo(f"metrics: {out / 'eval_metrics.json'}")


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
    from rich.table import Table

    from geotune.backbones import backbone_status

    rows = backbone_status(all_models=all_models, pattern=filter_)
    table = Table(title="backbones (any timm model name works; --weights PATH loads a local file)")
    for col in ("backbone", "weights", "status", "notes"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["backbone"], r["weights"], r["status"], r["notes"])
    Console().print(table)


@app.command("compare")
def compare_command(
    data: Annotated[Path, typer.Option(help="ImageFolder root: DATA/<class>/<image>")],
    strategies: Annotated[
        str, typer.Option(help="comma-separated strategies")
    ] = "linear-probe,feature-extraction,lp-ft",
    labels_per_class: Annotated[
        str, typer.Option(help="comma-separated label budgets; 'all' = the whole pool")
    ] = "5,20,all",
    seeds: Annotated[int, typer.Option(min=1, help="seeds (splits) per cell")] = 3,
    pool_fraction: Annotated[
        float, typer.Option(help="labelled pool per class; the rest is the test set")
    ] = 0.2,
    val_fraction: Annotated[
        float, typer.Option(help="share of each budget held out for validation")
    ] = 0.2,
    test_per_class: Annotated[
        int | None,
        typer.Option(help="cap the shared test set per class (faster; wider intervals)"),
    ] = None,
    min_steps: Annotated[
        int,
        typer.Option(help="at least this many optimizer steps per trained cell (small budgets)"),
    ] = 0,
    config: Annotated[
        Path | None, typer.Option(help="YAML of `geotune train` options for every run")
    ] = None,
    output: Annotated[Path, typer.Option(help="folder that holds sweeps")] = Path("sweeps"),
    name: Annotated[str | None, typer.Option(help="sweep folder name")] = None,
) -> None:
    """Run strategies x label budgets x seeds on one dataset; write results, statistics and a report."""
    from geotune.compare import make_compare_config, run_compare

    train_options = {}
    if config is not None:
        from geotune.config import load_yaml_mapping

        train_options = load_yaml_mapping(config)
    cfg = make_compare_config(
        data=data,
        strategies=strategies,
        labels_per_class=labels_per_class,
        seeds=seeds,
        pool_fraction=pool_fraction,
        val_fraction=val_fraction,
        test_per_class=test_per_class,
        min_steps=min_steps,
        output=output,
        name=name,
        train=train_options,
    )
    sweep = run_compare(cfg, err_console)
    results = json.loads((sweep / "results.json").read_text())
    for line in results["recommendation"]:
        typer.echo(line)
    typer.echo(f"sweep folder: {sweep}")
    typer.echo(f"results: {sweep / 'results.csv'}; report: {sweep / 'report.html'}")


@app.command("report")
def report_command(
    folder: Annotated[Path, typer.Argument(help="a run folder or a compare sweep folder")],
) -> None:
    """(Re)generate report.html and report.md for a run or a compare sweep."""
    from geotune.report import write_report

    typer.echo(f"report: {write_report(folder)}")


@app.command("simulate")
def simulate_command(
    src: Annotated[Path, typer.Argument(help="ImageFolder dataset to copy")],
    dst: Annotated[Path, typer.Argument(help="new folder for the shifted copy")],
    shift: Annotated[
        str, typer.Option(help="sensor | resolution | blur | gain | noise | season | haze")
    ] = "sensor",
    strength: Annotated[float, typer.Option(help="0 (none) .. 1 (strong)")] = 0.5,
    seed: Annotated[int, typer.Option(help="draws the simulated sensor's band gains")] = 0,
    per_class: Annotated[int | None, typer.Option(help="copy at most N chips per class")] = None,
    split: Annotated[
        Path | None, typer.Option(help="a run's split.csv: copy only the chips of --part")
    ] = None,
    part: Annotated[str | None, typer.Option(help="train | val | test, with --split")] = None,
) -> None:
    """Write a copy of a dataset with a simulated sensor, season or haze shift."""
    from geotune.shift import simulate_folder

    out = simulate_folder(
        src, dst, shift, strength, seed, per_class, split, part, console=err_console
    )
    typer.echo(f"shifted copy: {out}")


@app.command("shift")
def shift_command(
    a: Annotated[
        Path, typer.Argument(help="reference ImageFolder dataset (e.g. the training data)")
    ],
    b: Annotated[Path, typer.Argument(help="the other dataset (e.g. the target)")],
    run: Annotated[
        Path | None, typer.Option(help="measure in the feature space of this run's backbone")
    ] = None,
    backbone: Annotated[
        str, typer.Option(help="timm backbone, when no --run")
    ] = "tf_efficientnet_lite0",
    weights: Annotated[
        str, typer.Option(help="auto | offline | hub | PATH, when no --run")
    ] = "auto",
    class_map: Annotated[
        Path | None, typer.Option(help="YAML 'b_class: a_class' pairs (default: same names)")
    ] = None,
    per_class: Annotated[int, typer.Option(help="chips per class and dataset (0: all)")] = 100,
    image_size: Annotated[
        int | None, typer.Option(help="input size (default: the weights' or the run's)")
    ] = None,
    bootstrap: Annotated[int, typer.Option(min=10, help="bootstrap resamples")] = 200,
    output: Annotated[Path, typer.Option(help="folder that holds shift reports")] = Path("shifts"),
    name: Annotated[str | None, typer.Option(help="report folder name")] = None,
) -> None:
    """Measure the domain shift between two datasets: MMD, Frechet distance, domain classifier."""
    from geotune.shift import describe, measure_shift

    result, out = measure_shift(
        a,
        b,
        backbone,
        weights,
        run,
        class_map,
        per_class or None,
        bootstrap,
        output=output,
        name=name,
        console=err_console,
    )
    typer.echo(describe(result))
    typer.echo(f"report: {out / 'shift.md'}; embedding: {out / 'embedding.png'}")


@app.command("adapt")
def adapt_command(
    run_dir: Annotated[Path, typer.Argument(help="a finished run to adapt")],
    target: Annotated[Path, typer.Option(help="unlabelled target chips (labels never read)")],
    method: Annotated[
        str, typer.Option(help="adabn | tent | coral | dann, or several, comma-separated")
    ] = "adabn",
    eval_data: Annotated[
        Path | None,
        typer.Option(help="labelled target data for before/after (default: --target if labelled)"),
    ] = None,
    class_map: Annotated[
        Path | None, typer.Option(help="YAML 'their_class: model_class' pairs")
    ] = None,
    max_target: Annotated[int | None, typer.Option(help="use at most N target chips")] = None,
    epochs: Annotated[int, typer.Option(help="tent / dann: passes over the data")] = 1,
    lr: Annotated[float | None, typer.Option(help="tent: 1e-3; dann: 1e-4")] = None,
    batch_size: Annotated[int, typer.Option()] = 32,
    seed: Annotated[int, typer.Option()] = 0,
    output: Annotated[
        Path | None, typer.Option(help="folder for new runs (default: beside RUN)")
    ] = None,
) -> None:
    """Adapt a run to unlabelled target data; one new run per method, with before/after."""
    from geotune.adapt import adapt_run, adaptation_markdown, make_adapt_config

    methods = [m.strip() for m in method.split(",") if m.strip()]
    configs = [
        make_adapt_config(
            method=m,
            target=target,
            eval_data=eval_data,
            class_map=class_map,
            max_target=max_target,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            output=output,
        )
        for m in methods
    ]
    summaries, before = [], None
    for cfg in configs:
        summary, out = adapt_run(run_dir, cfg, err_console, before)
        before = summary.pop("target_before_metrics")  # the same for every method
        summaries.append(summary)
        typer.echo(f"{cfg.method}: {out}")
    text = adaptation_markdown(summaries)
    typer.echo(text)
    if len(summaries) > 1:
        from geotune.rundir import atomic_write_text

        table = (output or Path(run_dir).parent) / f"{Path(run_dir).name}-adaptation.md"
        atomic_write_text(table, text)
        typer.echo(f"comparison: {table}")


def main() -> None:
    try:
        app()
    except GeotuneError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print(
            "interrupted; an unfinished run stays in its hidden OUTPUT/.NAME.partial folder"
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
