"""Options of `geotune pretrain`, validated once at the edge."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from geotune.models.names import DEFAULT_BACKBONE
from geotune.validation import (
    MAX_IMAGE_SIZE,
    StrictConfig,
    path_field,
    register_config_model,
)


@register_config_model
class PretrainConfig(StrictConfig):
    """Options of one continued self-supervised pretraining; the CLI flags come from here."""

    data: Path = path_field(
        "input-dir", description="unlabelled 8-bit RGB chips (any depth; class folders ignored)"
    )
    output: Path = path_field(
        "output-file", description="checkpoint to write (.pt), for `geotune train --weights`"
    )
    method: str = Field("simclr", description="self-supervised method")
    backbone: str = Field(DEFAULT_BACKBONE, description="timm model name to start from")
    weights: str = Field("auto", description="its starting weights (auto | offline | hub | PATH)")
    image_size: int | None = Field(
        None, ge=16, le=MAX_IMAGE_SIZE, description="input size (default: the weights' own)"
    )
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=2, description="chips per step (two views each)")
    lr: float = Field(
        1e-4, gt=0, description="AdamW learning rate (small: the start is pretrained)"
    )
    weight_decay: float = Field(1e-4, ge=0)
    crop_scale: tuple[float, float] = Field(
        (0.3, 1.0), description="random resized crop area range of each view"
    )
    seed: int = Field(0, ge=0)
    resume: bool = Field(False, description="continue a killed pretraining of the same --output")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    devices: int = Field(1, ge=1, description="processes per node (DDP via Lightning Fabric)")
    num_nodes: int = Field(1, ge=1)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        from geotune.pretrain.methods import SSL_METHODS, UNSUPPORTED

        if v in UNSUPPORTED:
            raise ValueError(UNSUPPORTED[v])
        if v not in SSL_METHODS:
            raise ValueError(f"unknown method '{v}'; use one of {', '.join(SSL_METHODS)}")
        return v

    @field_validator("output")
    @classmethod
    def _checkpoint_suffix(cls, v: Path) -> Path:
        if v.suffix not in (".pt", ".pth"):
            raise ValueError(f"{v} must end in .pt or .pth (a torch checkpoint)")
        return v
