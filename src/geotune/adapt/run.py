"""Unsupervised domain adaptation of a finished run to unlabelled target chips (`geotune adapt`).

Methods (each writes a new run folder with an ordinary classifier checkpoint):

- ``adabn`` (Li et al., 2016): every BatchNorm layer's statistics re-estimated on the target.
- ``tent`` (Wang et al., ICLR 2021): BatchNorm affine parameters trained to minimise the entropy
  of the predictions on target batches (batch statistics), then statistics re-estimated (AdaBN),
  so the saved model predicts in eval mode.
- ``coral`` (Sun et al., 2016): the second-order statistics of target features aligned with
  those of the source features (mean and shrunk covariance; target -> source, so the trained
  head is kept). The alignment is affine, so it is folded into the head's first linear layer.
- ``dann`` (Ganin et al., 2016): source classification loss plus a domain classifier behind a
  gradient-reversal layer, training the last backbone groups and the head.

Target labels are never read for adaptation: the target folder is listed as plain image files.
Labels are read only from the evaluation data (``eval_data``; by default the target folder when it
has class folders, which is the transductive protocol), and each run folder records which chips
were used for what (``adaptation.json``, ``adaptation_images.csv``).
"""

from __future__ import annotations

import functools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import geotune.adapt.methods  # noqa: F401 - registers the built-in methods
import geotune.adapt.real_shift  # noqa: F401 - registers rescale, label-set and shot
from geotune.adapt.config import AdaptConfig
from geotune.adapt.real_shift import declared_label_set, restrict_views
from geotune.adapt.registry import ADAPT_METHODS, AdaptContext
from geotune.adapt.signals import harm_signals, summarize, unknown_threshold, view_probabilities
from geotune.data.bands import BandRequest
from geotune.data.batches import image_batches
from geotune.data.classmap import label_remap, load_class_map, pair_classes, scored_labels
from geotune.data.decode import DecodedImages, decode_folder
from geotune.data.folder import cache_root, has_class_folders, list_unlabelled
from geotune.data.raster import chip_side
from geotune.data.scan import single_label_chips
from geotune.engine.fabric import resolve_device
from geotune.engine.predict import predict
from geotune.errors import ConfigError, DataError
from geotune.evaluation.evaluate import run_images
from geotune.fileio import atomic_write_csv, atomic_write_json, atomic_write_text
from geotune.metrics.classification import classification_metrics, save_metrics
from geotune.models.classifier import load_classifier, save_classifier
from geotune.runs.artifacts import (
    TEST_METRICS_FILE,
    TestMetrics,
    read_run_config,
    refuse_multilabel_run,
)
from geotune.runs.paths import CACHE, refuse_outputs_in_inputs, staging_of
from geotune.runs.rundir import RunDir, require_complete_run


@dataclass
class Evaluation:
    """Labelled target data for before/after (labels used for scoring only)."""

    root: Path
    transductive: bool
    images: DecodedImages
    labels: np.ndarray  # in the model's class order; -1 = class without a pair
    idx: np.ndarray
    mapping: dict[str, list[str]]
    excluded: list[str]

    def score(self, model, prep, classes, device) -> dict:
        probs, _ = predict(model, prep, self.images.pixels, self.idx, 64, device)
        preds = probs.argmax(1).numpy()
        their = self.images.folder
        y = scored_labels(their.labels[self.idx], preds, their.classes, classes, self.mapping)
        metrics = classification_metrics(y, preds, classes)
        metrics["chip_correct"] = (y == preds).astype(int).tolist()  # for paired intervals
        return metrics


def _adaptable_checkpoint(run: Path) -> tuple[Path, Path]:
    """The finished run and its classifier checkpoint, or a one-line error."""
    run = require_complete_run(run)
    ckpt_path = run / "checkpoints" / "best.pt"
    if not ckpt_path.is_file():
        raise ConfigError(f"run {run} keeps no classifier checkpoint (kNN); adapt a trained run")
    refuse_multilabel_run(run, "adapt")  # its methods assume one softmax over the classes
    return run, ckpt_path


def adapt_run(
    run: Path,
    config: AdaptConfig,
    console: Console | None = None,
    before: dict | None = None,
    source_views: list[np.ndarray] | None = None,
) -> tuple[dict, Path]:
    """Adapt the best checkpoint of ``run`` to ``config.target``; returns (summary, new run).

    Target chips the source model does not recognise (open set: less confident than the
    ``unknown_quantile`` of its own test confidences) are left out of the adaptation. After it,
    label-free harm signals compare the adapted model's target predictions with the source's.

    Args:
        run: a finished run folder with a classifier checkpoint.
        config: the adaptation options (``make_adapt_config``).
        console: where progress goes.
        before: the unadapted model's metrics on the same evaluation data, when an earlier
            method already measured them (they do not depend on the method).
        source_views: the unadapted model's target probabilities (``signals.VIEWS``), likewise.

    Returns: the adaptation summary (adaptation.json) and the new run folder.
    """
    console = console or Console(stderr=True)
    refuse_adapt_outputs_in_inputs(run, config)  # before any work (geotune.runs.paths)
    run, ckpt_path = _adaptable_checkpoint(run)
    device = resolve_device(config.device)
    model, prep, ckpt = load_classifier(ckpt_path)
    # The declared legend (label-set): read once; a bad class map fails before any work.
    allowed = (
        declared_label_set(config.class_map, ckpt["classes"])
        if "label-set" in config.steps
        else None
    )
    model.to(device)
    t0 = time.perf_counter()
    target, t_idx = _target_chips(config, prep)
    all_pix = target.pixels[t_idx] if len(t_idx) < len(target.folder) else target.pixels
    if source_views is None:
        source_views = view_probabilities(model, prep.normalize, all_pix, device)
    known, threshold = _known(run, config, source_views[0])
    if len(known) and known.sum() < config.batch_size:
        raise DataError(
            f"only {int(known.sum())} target chips are left for adaptation (batch size "
            f"{config.batch_size}); add target chips or lower --batch-size / --unknown-quantile"
        )
    t_pix = all_pix[known]
    evaluation = evaluation_data(config, prep, ckpt["classes"])
    if evaluation is not None:
        before = before or evaluation.score(model, prep, ckpt["classes"], device)
        console.log(
            f"before {config.method}: OA {100 * before['overall_accuracy']:.2f}% on "
            f"{len(evaluation.idx)} chips of {evaluation.root}"
        )
    method_info = _apply_steps(run, config, model, prep, device, t_pix, target, ckpt["classes"])
    harm = _harm(allowed, source_views, model, prep, all_pix, device)
    summary = _summary(run, config, t_idx, method_info, time.perf_counter() - t0)
    summary["open_set"] = {
        "confidence_threshold": threshold,
        "unknown_chips_left_out": int((~known).sum()),
    }
    summary["harm_signals"] = harm
    summary["source_signals"] = summarize(source_views)  # the "no adaptation" candidate
    if harm["warnings"]:
        console.log(f"warning: {config.method} may have hurt: {'; '.join(harm['warnings'])}")
    scores = None
    if evaluation is not None:
        scores = (before, evaluation.score(model, prep, ckpt["classes"], device))
    final = _write_adapted(run, config, model, ckpt, target, t_idx, summary, evaluation, scores)
    summary["source_views"] = source_views  # not saved; the next method reuses them
    if scores is not None:
        summary["chip_correct_after"] = scores[1]["chip_correct"]
        console.log(
            f"after {config.method}: OA {100 * summary['target_oa_after']:.2f}% "
            f"({100 * summary['gain']:+.2f} points)"
        )
    return summary, final


def adapted_run_folder(run: Path, config: AdaptConfig) -> Path:
    """Where the adapted run goes: OUTPUT (default: beside RUN) / NAME (default RUN-METHOD)."""
    run = Path(run)
    return Path(config.output or run.parent) / (config.name or f"{run.name}-{config.method}")


def refuse_adapt_outputs_in_inputs(run: Path, config: AdaptConfig, **more: Path) -> None:
    """The adapted run (and cache, and ``more`` outputs) must not be, hold or lie inside the
    source run, the target or the evaluation data (geotune.runs.paths)."""
    new = adapted_run_folder(run, config)
    refuse_outputs_in_inputs(
        {"--output/--name": new, "--output/--name (staging)": staging_of(new), **more},
        {
            "RUN_DIR": run,
            "--target": config.target,
            "--eval-data": config.eval_data,
            "--class-map": config.class_map,
        },
        {CACHE: cache_root()},
    )


def _known(run: Path, config: AdaptConfig, probs: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Which target chips are of classes the model knows (open-set awareness)."""
    threshold = unknown_threshold(run, config.unknown_quantile) if config.unknown_quantile else None
    if threshold is None:
        return np.ones(len(probs), dtype=bool), None
    return probs.max(1) >= threshold, threshold


def _harm(allowed, source_views, model, prep, pixels, device) -> dict:
    """Label-free harm signals of the adapted model against the source model; with label-set
    (``allowed``: the declared classes) they judge what the adaptation learnt within that set."""
    compared = source_views if allowed is None else restrict_views(source_views, allowed)
    return harm_signals(compared, view_probabilities(model, prep.normalize, pixels, device))


def _apply_steps(run, config, model, prep, device, t_pix, target, classes) -> dict:
    """Each method of ``config.method`` in order ('a+b'); what each records, keyed by step."""
    info: dict = {}
    for step in config.steps:
        step_config = config.model_copy(update={"method": step})
        ctx = _context(run, step_config, model, prep, device, t_pix, target, classes)
        out = ADAPT_METHODS[step].adapt(ctx)
        info.update(out if len(config.steps) == 1 else {f"{step}_{k}": v for k, v in out.items()})
    return info


def _context(run, config, model, prep, device, t_pix, target, classes) -> AdaptContext:
    def target_batches(shuffle: bool = False):
        gen = torch.Generator().manual_seed(config.seed)
        return image_batches(
            t_pix, np.arange(len(t_pix)), config.batch_size, prep.normalize, device, shuffle, gen
        )

    def source_example():
        first = (run / "split.csv").read_text().splitlines()[1].split(",")[0]
        return read_run_config(run).data, first

    native = chip_side(target.folder.root / target.folder.paths[0])  # any band count
    source = functools.cache(lambda: _source_chips(run, prep))
    return AdaptContext(
        model,
        config,
        device,
        prep.normalize,
        t_pix,
        target_batches,
        source,
        source_example,
        native,
        list(classes),
    )


def _write_adapted(run, config, model, ckpt, target, t_idx, summary, evaluation, scores) -> Path:
    """The new run folder: an ordinary classifier checkpoint and what the adaptation used."""
    new = adapted_run_folder(run, config)
    out = RunDir(new.parent, new.name)
    out.create()
    try:
        for f in ("config.yaml", "split.csv"):
            shutil.copy2(run / f, out.path / f)  # `geotune evaluate NEW` re-tests on the source
        meta = {k: v for k, v in ckpt.items() if k not in ("format", "state_dict")}
        meta["input_zoom"] = float(model.input_zoom)
        save_classifier(out.path / "checkpoints" / "best.pt", model, meta)
        paths = ([target.folder.paths[i]] for i in t_idx)
        atomic_write_csv(out.path / "adaptation_images.csv", ["path"], paths)
        if evaluation is not None:
            _record_evaluation(out, summary, evaluation, *scores)
        atomic_write_json(out.path / "adaptation.json", summary)
        summary["target_before_metrics"] = scores[0] if scores else None
        atomic_write_text(out.path / "report.md", adaptation_markdown([summary]))
        return out.commit()
    except BaseException:
        out.discard()
        raise


def _summary(run: Path, config: AdaptConfig, t_idx, method_info: dict, seconds: float) -> dict:
    return {
        "method": config.method,
        "source_run": str(run.resolve()),
        "target": str(Path(config.target).resolve()),
        "target_images_used": int(len(t_idx)),
        "target_labels_used": False,
        "target_listing": "every image file under the target folder; folder names not read",
        "options": config.model_dump(mode="json"),
        **{f"method_{k}": v for k, v in method_info.items()},
        "adaptation_seconds": seconds,
        "source_test_overall_accuracy": TestMetrics.read(run / TEST_METRICS_FILE).overall_accuracy
        if (run / TEST_METRICS_FILE).is_file()
        else None,
    }


def _target_chips(config: AdaptConfig, prep) -> tuple[DecodedImages, np.ndarray]:
    """The target chips, unlabelled by construction, and the ones used (``max_target``)."""
    bands = BandRequest.for_run(prep.bands, "the run")  # the bands it was trained on, or an error
    target = decode_folder(
        list_unlabelled(config.target), prep.size, prep.interpolation, bands=bands
    )
    t_idx = np.arange(len(target.folder))
    if config.max_target is not None and len(t_idx) > config.max_target:
        rng = np.random.default_rng(config.seed)
        t_idx = np.sort(rng.permutation(t_idx)[: config.max_target])
    return target, t_idx


def evaluation_data(config: AdaptConfig, prep, classes: list[str]) -> Evaluation | None:
    """The labelled target data (``eval_data``, or the target when it has class folders)."""
    root, transductive = config.eval_data, False
    if root is None and has_class_folders(config.target):
        root, transductive = config.target, True
    if root is None:
        return None
    folder = single_label_chips(root, "adaptation scores one class per chip")
    mapping, excluded = pair_classes(folder.classes, classes, load_class_map(config.class_map))
    bands = BandRequest.for_run(prep.bands, "the run")
    images = decode_folder(folder, prep.size, prep.interpolation, bands=bands)
    labels = label_remap(images.folder.classes, classes, mapping)[images.folder.labels]
    idx = np.flatnonzero(labels >= 0)
    return Evaluation(Path(root), transductive, images, labels, idx, mapping, excluded)


def _record_evaluation(out: RunDir, summary: dict, ev: Evaluation, before, after) -> None:
    save_metrics(before, out.path, "target_before")
    save_metrics(after, out.path, "target")
    summary.update(
        evaluation_data=str(ev.root.resolve()),
        evaluation_protocol="transductive (the target chips, labels only for scoring)"
        if ev.transductive
        else "separate labelled target data",
        evaluation_images=int(len(ev.idx)),
        class_pairs=ev.mapping,
        excluded_classes=ev.excluded,
        target_oa_before=before["overall_accuracy"],
        target_oa_after=after["overall_accuracy"],
        gain=after["overall_accuracy"] - before["overall_accuracy"],
    )


def _source_chips(run: Path, prep):
    """The run's own training chips (pixels, labels, indices) from its config and split."""
    images, split = run_images(run, prep)
    return images.pixels, images.folder.labels, np.flatnonzero(split == "train")


def adaptation_markdown(summaries: list[dict]) -> str:
    """Before/after on the target for one or more methods, and which helped or hurt."""
    first = summaries[0]
    lines = [
        f"# Adaptation of {Path(first['source_run']).name} to {Path(first['target']).name}",
        "",
        f"Target chips used (unlabelled): {first['target_images_used']}; target labels used "
        f"for adaptation: {'yes' if first['target_labels_used'] else 'no'}.",
    ]
    if "target_oa_before" not in first:
        return "\n".join(lines) + "\n\nNo labelled evaluation data was given.\n"
    lines += [
        f"Evaluation: {first['evaluation_images']} chips of {first['evaluation_data']} "
        f"({first['evaluation_protocol']}).",
        "",
        "| method | target OA before | target OA after | change (95% CI) | verdict | "
        "harm signals (label-free) |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        verdict = "helped" if s["gain"] > 0 else ("hurt" if s["gain"] < 0 else "no change")
        ci = s.get("gain_ci")
        ci_text = f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else ""
        warnings = "; ".join(s.get("harm_signals", {}).get("warnings", [])) or "none"
        lines.append(
            f"| {s['method']} | {100 * s['target_oa_before']:.2f}% | "
            f"{100 * s['target_oa_after']:.2f}% | {100 * s['gain']:+.2f} pt{ci_text} | "
            f"{verdict} | {warnings} |"
        )
    src = first.get("source_test_overall_accuracy")
    if src is not None:
        drop = src - first["target_oa_before"]
        lines += [
            "",
            f"In-domain test OA of the source run: {100 * src:.2f}% (drop on the target: {100 * drop:.2f} points).",
        ]
        if drop > 0:
            for s in summaries:
                lines.append(f"- {s['method']} recovers {100 * s['gain'] / drop:.0f}% of the drop.")
    return "\n".join(lines) + "\n"
