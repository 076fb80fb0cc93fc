"""A model as an ONNX graph: what `geotune export` ships and what the CPU feature pass runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

INPUT_NAME, OUTPUT_NAME = "image", "logits"


def write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """torch.onnx (the dynamo exporter) with a dynamic batch axis, one self-contained file."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=True, dynamic_shapes=({0: batch},),
            external_data=False, verbose=False,
        )  # fmt: skip
