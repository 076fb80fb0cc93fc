"""`geotune predict` and `geotune export`: using a trained model (a thin layer over
geotune.inference). Both commands' options are generated from their config models."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from geotune.cli.options import config_option, model_signature, options_from, with_signature
from geotune.inference.config import ExportConfig, PredictConfig

err_console = Console(stderr=True)


def predict_command(**kwargs: Any) -> None:
    """Predict chips (files, folders, .txt lists) into a CSV, or a GeoTIFF scene into a class map."""
    from geotune.inference.model import load_predictor

    cfg = options_from(PredictConfig, kwargs)
    predictor = load_predictor(cfg.run, cfg.device)
    if cfg.scene:
        scene_command(cfg, predictor)
    else:
        chips_command(cfg, predictor)


def chips_command(cfg: PredictConfig, predictor) -> None:
    from geotune.inference.chips import predict_chips

    r = predict_chips(
        predictor, cfg.inputs, cfg.resolved_output(), cfg.top_k, cfg.options(), cfg.overwrite,
        err_console,
    )  # fmt: skip
    calibration = f"temperature {r.temperature:.3f}" if r.calibrated else "raw (no calibration)"
    typer.echo(
        f"{r.n_predicted} chips predicted in {r.seconds:.1f}s ({r.chips_per_s:.1f} chips/s, "
        f"{predictor.kind}); probabilities {calibration}"
    )
    if r.accuracy is not None:
        typer.echo(f"accuracy {100 * r.accuracy:.2f}% on {r.n_labelled} chips in class folders")
    if r.n_skipped:
        typer.echo(f"{r.n_skipped} unreadable files skipped: {r.skipped_file}")
    typer.echo(f"predictions: {r.output}")


def scene_command(cfg: PredictConfig, predictor) -> None:
    from geotune.inference.scene import describe_scene, predict_scene

    r = predict_scene(
        predictor, cfg.inputs[0], cfg.resolved_output(), cfg.tile, cfg.stride, cfg.blend,
        cfg.full_res, cfg.probabilities, cfg.options(), cfg.overwrite, err_console,
    )  # fmt: skip
    typer.echo(describe_scene(r))
    typer.echo(
        f"class map: {r.map_path}; classes and areas: {r.json_path}; preview: {r.preview_path}"
    )
    if r.probabilities_path:
        typer.echo(f"probabilities: {r.probabilities_path}")


def export_command(**kwargs: Any) -> None:
    """Export a run's classifier to ONNX or TorchScript with a JSON model card (parity-checked)."""
    from geotune.inference.export import export_model

    cfg = options_from(ExportConfig, kwargs)
    r = export_model(**cfg.model_dump(), console=err_console)
    p = r.parity
    typer.echo(
        f"parity on {p['chips']} chips: max |logit diff| {p['max_abs_logit_diff']:.2e}, "
        + (
            f"top-1 identical {p['top1_identical']}"
            if "top1_identical" in p
            else f"label sets identical {p['label_sets_identical']}"
        )  # multi-label
        + f"/{p['chips']}"
    )
    typer.echo(f"model: {r.model_path}; card: {r.card_path}")


def register(app: typer.Typer) -> None:
    """Add `predict` and `export` to the geotune command."""
    app.command("predict")(
        with_signature(
            predict_command,
            model_signature(PredictConfig, positional=["run", "inputs"], extra=[config_option()]),
        )
    )
    app.command("export")(
        with_signature(
            export_command,
            model_signature(ExportConfig, positional=["run"], extra=[config_option()]),
        )
    )
