"""Options of `geotune predict` and `geotune export`, validated once at the edge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from geotune.validation import (
    MAX_WORKERS,
    StrictConfig,
    path_field,
    register_config_model,
)

TTA = Literal["none", "flip", "rot2", "rot4", "d4"]


@dataclass(frozen=True)
class PredictOptions:
    """How a predictor runs, over chips (``predict_chips``) or scene windows (``predict_scene``).

    Attributes:
        tta: test-time augmentation views averaged per chip or window.
        calibrated: apply the model's validation-fitted temperature (and, for a multi-label
            model, the thresholds chosen on calibrated probabilities).
        batch_size: chips or windows per forward pass.
        workers: decode / resize threads (default: the machine's cores).
    """

    tta: str = "none"
    calibrated: bool = True
    batch_size: int = 32
    workers: int | None = None


@register_config_model
class PredictConfig(StrictConfig):
    """Options of `geotune predict`; its flags are generated from these fields."""

    run: Path = path_field(
        "input",
        description="a finished run folder, or an exported .onnx / .pt model with its .json card",
    )
    inputs: list[Path] = path_field(
        "input",
        min_length=1,
        description="chip files, folders (recursive; class sub-folders give accuracy), "
        ".txt lists of paths; or one GeoTIFF with --scene",
    )
    output: Path | None = path_field(
        "output-file",
        None,
        description="predictions CSV (default predictions.csv) or, with --scene, map.tif",
    )
    top_k: int = Field(3, ge=1, description="classes and probabilities listed per chip")
    tta: TTA = Field("none", description="test-time augmentation views averaged per chip/window")
    calibration: bool = Field(
        True, description="apply the run's validation-fitted temperature to the probabilities"
    )
    batch_size: int = Field(32, ge=1, description="chips or windows per forward pass")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    workers: int | None = Field(
        None, ge=1, le=MAX_WORKERS, description="decode threads (default: cores)"
    )
    overwrite: bool = Field(False, description="replace outputs that already exist")
    scene: bool = Field(False, description="INPUT is one GeoTIFF: sliding-window class map")
    tile: int | None = Field(
        None, ge=1, description="scene: window size in scene pixels (default: the model's input)"
    )
    stride: int | None = Field(None, ge=1, description="scene: window step (default: tile / 2)")
    blend: Literal["mean", "centre"] = Field(
        "mean", description="scene: how overlapping windows combine (centre: weight by distance)"
    )
    full_res: bool = Field(
        False, description="scene: write the map at the scene's resolution, not the stride's"
    )
    probabilities: bool = Field(
        False, description="scene: also write a per-class probability GeoTIFF"
    )

    @model_validator(mode="after")
    def _check_scene(self) -> PredictConfig:
        if self.scene and len(self.inputs) != 1:
            raise ValueError("--scene takes exactly one GeoTIFF")
        if self.tile and self.stride and self.stride > self.tile:
            raise ValueError(
                f"stride {self.stride} > tile {self.tile} leaves pixels no window sees; "
                "pass --stride <= --tile"
            )
        return self

    def resolved_output(self) -> Path:
        return Path(self.output or ("map.tif" if self.scene else "predictions.csv"))

    def options(self) -> PredictOptions:
        return PredictOptions(self.tta, self.calibration, self.batch_size, self.workers)


@register_config_model
class ExportConfig(StrictConfig):
    """Options of `geotune export`; its flags are generated from these fields."""

    run: Path = path_field(
        "input-dir", description="a finished run folder written by `geotune train`"
    )
    format: Literal["onnx", "torchscript"] = Field("onnx", description="graph format")
    output: Path | None = path_field(
        "output-file",
        None,
        description="model file (default RUN_NAME.onnx / RUN_NAME.pt); card beside it",
    )
    check_chips: int = Field(
        64, ge=1, description="real chips (the run's test split) the parity check runs on"
    )
    check_data: Path | None = path_field(
        "input-dir",
        None,
        description="chip folder for the parity check when the run's data has moved",
    )
    atol: float = Field(
        1e-3, gt=0, description="largest allowed |logit difference| vs PyTorch in the check"
    )
    opset: int = Field(18, ge=13, description="ONNX opset version")
    overwrite: bool = Field(False, description="replace an existing model file and card")

    def resolved_output(self) -> Path:
        suffix = ".onnx" if self.format == "onnx" else ".pt"
        return Path(self.output or f"{Path(self.run).name}{suffix}")
