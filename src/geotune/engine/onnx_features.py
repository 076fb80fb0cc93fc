"""The frozen backbone's forward pass on CPU through ONNX Runtime.

A linear probe's first run is nearly all one forward pass of the frozen backbone over every chip.
On CPU, ONNX Runtime ran EfficientNet-Lite0 4.7-4.9x faster than PyTorch eager (channels-last,
oneDNN) on the same 2 cores, and the probe's whole feature pass over AID 3.1x faster with its
export included, with features equal to 1e-5 (benchmarks/feature_pass.py, BENCHMARKS.md). The
graph is exported once per module content (parameters, buffers, input shape) with geotune's own
ONNX exporter (`geotune export` uses the same one) and kept in the cache beside the features.
Anything the exporter or runtime cannot take (an unusual architecture, a missing operator) falls
back to PyTorch with one log line: the features are the same either way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geotune.data.folder import cache_root
from geotune.fileio import group_shared, make_folder, share_with_group

# The export took 8-9 s for Lite0 on 2 cores and saves ~0.05 s per image: below a few hundred
# forward passes PyTorch finishes first.
ORT_MIN_PASSES = 512
ONNX_OPSET = 18


def resolve_feature_engine(setting: str, device: torch.device, n_passes: int) -> str:
    """``auto``: ONNX Runtime for CPU passes long enough to repay the export, else PyTorch."""
    if setting != "auto":
        return setting
    if device.type == "cpu" and n_passes >= ORT_MIN_PASSES:
        return "onnxruntime"
    return "torch"


def module_key(module: nn.Module, example: torch.Tensor) -> str:
    """A content key of the graph to export: every parameter and buffer (non-persistent ones too,
    such as a composite's band index), the wrapper classes, and the input's shape past the batch."""
    h = hashlib.sha1(f"{type(module).__name__}|{tuple(example.shape[1:])}".encode())
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def onnx_path(key: str) -> Path:
    return cache_root() / "onnx" / f"{key}.onnx"


def _export(backbone: nn.Module, example: torch.Tensor, path: Path) -> None:
    from geotune.models.onnx import write_onnx

    make_folder(path.parent, shared=True)
    tmp = path.with_suffix(f".{time.time_ns()}.tmp")
    try:
        write_onnx(backbone, example, tmp, ONNX_OPSET)
        if group_shared(path.parent):
            share_with_group(tmp)
        tmp.replace(path)  # atomic: a concurrent run sees the whole file or none
    finally:
        tmp.unlink(missing_ok=True)


def onnx_forward(
    backbone: nn.Module, example: torch.Tensor
) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """A function computing ``backbone(x)`` with ONNX Runtime on CPU, and the export seconds
    (0 when the graph was cached). Raises what the exporter or runtime raised."""
    import onnxruntime as ort

    path = onnx_path(module_key(backbone, example))
    export_s = 0.0
    if not path.is_file():
        t0 = time.perf_counter()
        _export(backbone.eval(), example, path)
        export_s = time.perf_counter() - t0
    options = ort.SessionOptions()
    # As many threads as PyTorch was given: the two engines are compared on the same cores.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().cpu().numpy()
        # The graph's batch axis is bounded (models.onnx.write_onnx); big batches go in chunks.
        chunks = [np.ascontiguousarray(x[i : i + 1024]) for i in range(0, len(x), 1024)]
        return torch.from_numpy(np.concatenate([session.run(None, {name: c})[0] for c in chunks]))

    return forward, export_s
