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
) -> None:
    """Re-evaluate a finished run on its test split, or on another dataset with the same classes."""
    from geotune.augment import TTA_VIEWS
    from geotune.errors import ConfigError
    from geotune.evaluate import evaluate_run

    if tta not in TTA_VIEWS:
        raise ConfigError(f"bad value for 'tta': {tta!r}; use one of {', '.join(TTA_VIEWS)}")
    metrics, out = evaluate_run(run_dir, data, batch_size, device, tta=tta, console=err_console)
    typer.echo(
        f"overall accuracy {100 * metrics['overall_accuracy']:.2f}% on {metrics['n']} images"
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
