"""`geotune export`: a run's classifier as ONNX or TorchScript, with a JSON model card.

The graph takes normalised N-band float tensors (NCHW, dynamic batch) and returns logits; the
card says how to get there (size, mean/std, resampling), what the outputs mean (classes), how
to calibrate them (temperature) and how good the model is (test metrics). Before anything is
kept, the exported graph is run next to PyTorch on real chips; a logit difference above the
tolerance or any changed top-1 class is a one-line ExportError and no file is left behind.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from geotune.config import flatten_sections
from geotune.errors import ConfigError, ExportError
from geotune.fileio import atomic_write_json
from geotune.inference.chips import collect_chips, decode_chip
from geotune.inference.model import (
    ModelCard,
    card_path,
    onnx_logits,
    run_checkpoint,
    torchscript_logits,
)
from geotune.inference.outputs import OutputSet
from geotune.metrics.selection import label_thresholds
from geotune.models.onnx import INPUT_NAME, OUTPUT_NAME, write_onnx
from geotune.models.preprocessing import Preprocessing

BANDS = ["red", "green", "blue"]


@dataclass
class ExportResult:
    """The written model and card, and the parity figures."""

    model_path: Path
    card_path: Path
    parity: dict


def parity_chips(run: Path, prep: Preprocessing, classes, n: int, check_data: Path | None):
    """Up to ``n`` real chips (uint8 NCHW at the model's size), spread over the run's test
    split (or over ``check_data``)."""
    if check_data is not None:
        paths = collect_chips([check_data], classes).paths
    else:
        from geotune.runs.artifacts import read_run_config

        root = Path(read_run_config(run).data)
        with open(run / "split.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
        paths = [root / r["path"] for r in rows]
    pick = np.unique(np.linspace(0, len(paths) - 1, min(n, len(paths))).round().astype(int))
    chips = (
        [decode_chip(paths[i], prep.size, prep.interpolation, prep.bands) for i in pick]
        if paths
        else []
    )
    chips = [c for c in chips if not isinstance(c, str)]
    if not chips:
        where = check_data or "the run's test split"
        raise ConfigError(
            f"no readable chips in {where} for the parity check; pass --check-data FOLDER"
        )
    return torch.from_numpy(np.stack(chips))


def write_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """torch.jit.trace: the classifier has no data-dependent control flow."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))


def reference_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """PyTorch's logits: what the exported graph must reproduce."""
    with torch.inference_mode():
        return model(x).float()


def check_parity(
    reference: torch.Tensor,
    exported: torch.Tensor,
    atol: float,
    what: str,
    thresholds: list[float] | None = None,
) -> dict:
    """Max |logit difference| and top-1 agreement (multi-label, ``thresholds`` given: the
    predicted label sets); ExportError when either fails."""
    diff = float((reference - exported).abs().max())
    if thresholds is None:
        same = int((reference.argmax(1) == exported.argmax(1)).sum())
    else:
        t = torch.tensor(thresholds)
        same = int(((reference.sigmoid() >= t) == (exported.sigmoid() >= t)).all(1).sum())
    parity = {
        "chips": len(reference),
        "max_abs_logit_diff": diff,
        "top1_identical" if thresholds is None else "label_sets_identical": same,
        "atol": atol,
    }
    if not diff <= atol or same != len(reference):
        decided = "top-1" if thresholds is None else "the label set"
        raise ExportError(
            f"{what} does not reproduce PyTorch on {len(reference)} chips (max |logit diff| "
            f"{diff:.3g} > {atol:g} or {decided} changed on {len(reference) - same}); nothing "
            "written"
        )
    return parity


def model_card(run: Path, ckpt: dict, fmt: str, model_file: Path, parity: dict) -> dict:
    """The JSON card: classes, bands, preprocessing, temperature, training data, test metrics."""
    from geotune.runs.artifacts import (
        SUMMARY_FILE,
        TEST_METRICS_FILE,
        RunSummary,
        TestMetrics,
        read_run_config,
    )

    cfg = read_run_config(run)
    multilabel = bool(ckpt.get("multilabel"))
    if multilabel:  # the multi-label figures (geotune.metrics.multilabel), not TestMetrics'
        metrics = json.loads((run / TEST_METRICS_FILE).read_text())
        keep = ("n", "map_macro", "map_micro", "f1_micro", "f1_macro", "f1_samples",
                "hamming_loss", "subset_accuracy")  # fmt: skip
    else:
        metrics = TestMetrics.read(run / TEST_METRICS_FILE).model_dump()
        keep = ("n", "overall_accuracy", "average_accuracy", "macro_f1", "kappa", "ece", "brier")
    classes = list(ckpt["classes"])
    thresholds = label_thresholds(ckpt, classes)
    prep = Preprocessing.from_dict(ckpt["preprocessing"])
    summary = RunSummary.read(run / SUMMARY_FILE)
    card = ModelCard(
        format=fmt,
        file=model_file.name,
        classes=classes,
        bands=BANDS,
        input={
            "name": INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "shape": ["batch", len(BANDS), prep.size, prep.size],
            "output": OUTPUT_NAME,
        },  # fmt: skip
        preprocessing={
            **prep.to_dict(),
            "recipe": "8-bit RGB chip resized as a whole to size x size (short side, then a "
            "centre crop if not square); x = (pixel / 255 - mean) / std per band",
        },
        temperature=float(ckpt.get("temperature") or 1.0),
        training={
            "run": Path(run).resolve().name,
            "data": str(cfg.data),
            "strategy": cfg.strategy,
            "backbone": cfg.backbone,
            "weights": ckpt.get("weights"),
            "seed": cfg.seed,
            "checkpoint_epoch": ckpt.get("epoch"),
            "chips": {
                "train": summary.n_train,
                "val": summary.n_val,
                "test": summary.n_test,
            },
        },  # fmt: skip
        test_metrics={k: metrics.get(k) for k in keep},
        parity=parity,
        multilabel=multilabel,
        thresholds=None if thresholds is None else dict(zip(classes, thresholds, strict=True)),
        label_temperatures=None
        if not ckpt.get("label_temperatures")
        else dict(zip(classes, map(float, ckpt["label_temperatures"]), strict=True)),
    )
    rule = (
        "probabilities = sigmoid(logits / label_temperatures[label]), one per label; the label "
        "is present where sigmoid(logits) >= thresholds[label] (F1-optimal on the validation "
        "chips; the same decision as calibrated probability >= sigmoid(logit(threshold) / T))"
        if multilabel
        else "probabilities = softmax(logits / temperature)"
    )
    return {**card.model_dump(), "calibration": rule,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip


def _run_data(run: Path) -> Path | None:
    """The dataset a run was trained on (the parity check reads its chips), if recorded."""
    import yaml

    try:
        saved = flatten_sections(yaml.safe_load((run / "config.yaml").read_text()) or {})
        data = saved.get("data")
    except (OSError, yaml.YAMLError, AttributeError, ValueError):
        return None
    return Path(data) if isinstance(data, str) and data else None


def export_model(
    run: Path,
    format: str = "onnx",
    output: Path | None = None,
    check_chips: int = 64,
    check_data: Path | None = None,
    atol: float = 1e-3,
    opset: int = 18,
    overwrite: bool = False,
    console: Console | None = None,
) -> ExportResult:
    """Export a run's classifier and verify it against PyTorch on real chips.

    Args:
        run: a finished run folder with a classifier checkpoint.
        format: ``onnx`` or ``torchscript``.
        output: the model file (default ``RUN_NAME.onnx`` / ``RUN_NAME.pt``); the card is
            ``<output>.json``.
        check_chips: chips of the run's test split the parity check uses.
        check_data: a chip folder to check on instead (when the run's data has moved).
        atol: the largest allowed |logit difference|.
        opset: ONNX opset version.
        overwrite: replace an existing model and card.
        console: log.

    Returns:
        Paths and parity figures.

    Raises:
        ExportError: the exported graph does not reproduce PyTorch (nothing is written).
    """
    from geotune.models.classifier import load_classifier

    console = console or Console(stderr=True)
    suffix = ".onnx" if format == "onnx" else ".pt"
    output = Path(output or f"{Path(run).resolve().name}{suffix}")
    inputs = {"RUN": run, "--check-data": check_data, "the run's data": _run_data(Path(run))}
    outputs = OutputSet([output, card_path(output)], overwrite, inputs)
    ckpt_path = run_checkpoint(run)
    model, prep, ckpt = load_classifier(ckpt_path)
    model = model.eval()
    x = prep.normalize(parity_chips(Path(run), prep, ckpt["classes"], check_chips, check_data))
    with outputs.writing():
        tmp = outputs.temp(output)
        t0 = time.perf_counter()
        example = x[:1].repeat(2, 1, 1, 1)  # batch 2: a batch of 1 would be specialised
        if format == "onnx":
            write_onnx(model, example, tmp, opset)
            run_exported = onnx_logits(tmp, torch.device("cpu"))
        else:
            write_torchscript(model, example, tmp)
            run_exported = torchscript_logits(tmp, torch.device("cpu"))
        seconds = time.perf_counter() - t0
        exported = torch.cat([run_exported(x[i : i + 32]) for i in range(0, len(x), 32)])
        parity = check_parity(
            reference_logits(model, x), exported, atol, f"{format} export", ckpt.get("thresholds")
        )
        parity["export_seconds"] = seconds
        card = model_card(Path(run), ckpt, format, output, parity)
        atomic_write_json(outputs.temp(card_path(output)), card)
    console.log(
        f"{format}: max |logit diff| {parity['max_abs_logit_diff']:.2e} on {parity['chips']} chips, "
        f"{'top-1' if 'top1_identical' in parity else 'label sets'} identical on all"
    )
    return ExportResult(output, card_path(output), parity)
