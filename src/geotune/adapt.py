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

import json
import math
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from torch import nn

from geotune.config import _format_error
from geotune.data import (
    IMAGE_EXTENSIONS,
    SceneFolder,
    decode_folder,
    image_batches,
    iterate_batches,
    scan_folder,
)
from geotune.errors import ConfigError, DataError
from geotune.freezing import (
    BatchNormPolicy,
    _is_bn,
    apply_trainable,
    layer_groups,
    reestimate_batchnorm,
)
from geotune.metrics import classification_metrics, save_metrics
from geotune.model import SceneClassifier, load_classifier, save_classifier, signed_power
from geotune.rundir import (
    RunDir,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    require_complete_run,
)
from geotune.shift import label_remap, load_class_map, pair_classes

Method = Literal["adabn", "tent", "coral", "dann"]
ADAPT_METHODS: tuple[str, ...] = ("adabn", "tent", "coral", "dann")


class AdaptConfig(BaseModel):
    """Options of one adaptation; validated once, here."""

    model_config = ConfigDict(extra="forbid")

    method: Method
    target: Path = Field(description="unlabelled target chips (class folders allowed, ignored)")
    eval_data: Path | None = Field(
        None, description="labelled target data for before/after (default: target, if labelled)"
    )
    class_map: Path | None = Field(None, description="YAML 'their_class: model_class' pairs")
    max_target: int | None = Field(None, ge=1, description="use at most this many target chips")
    epochs: int = Field(1, ge=1, description="tent / dann: passes over the target chips")
    lr: float | None = Field(None, gt=0, description="tent: 1e-3; dann: 1e-4 (head x10)")
    batch_size: int = Field(32, ge=2)
    trainable_groups: int = Field(2, ge=1, description="dann: last backbone groups trained")
    seed: int = 0
    device: str = "auto"
    output: Path | None = Field(None, description="folder for the new run (default: beside RUN)")
    name: str | None = None


def make_adapt_config(**values) -> AdaptConfig:
    try:
        return AdaptConfig(**values)
    except ValidationError as err:
        raise ConfigError(_format_error(err).replace("config key", "adapt option")) from None


def list_unlabelled(root: Path) -> SceneFolder:
    """Every image under ``root`` (any depth), as one unlabelled pseudo-class: folder names are
    not read as labels, so target labels cannot reach the adaptation."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"target folder {root} not found; pass --target DIR of target chips")
    paths = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not paths:
        raise DataError(f"target folder {root} holds no images; pass a folder of target chips")
    return SceneFolder(root, ["unlabelled"], paths, np.zeros(len(paths), dtype=np.int64))


def _has_class_folders(root: Path) -> bool:
    return any(d.is_dir() and not d.name.startswith(".") for d in Path(root).iterdir())


# ----------------------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------------------
def adapt_adabn(model, target_batches) -> dict:
    n = reestimate_batchnorm(model, target_batches())
    return {"bn_layers": sum(_is_bn(m) for m in model.modules()), "target_images": n}


def adapt_tent(model, target_batches, epochs: int, lr: float) -> dict:
    bns = [m for m in model.modules() if _is_bn(m) and m.weight is not None]
    if not bns:
        raise ConfigError("tent adapts BatchNorm layers, and this backbone has none; use coral")
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for m in bns for p in (m.weight, m.bias)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    model.eval()
    for m in bns:
        m.train()  # normalise with the target batch's statistics, as TENT does
    losses = []
    for _ in range(epochs):
        for x in target_batches(shuffle=True):
            p = model(x).float().log_softmax(-1)
            loss = -(p.exp() * p).sum(-1).mean()  # mean prediction entropy
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    for p in model.parameters():
        p.requires_grad_(True)
    n = reestimate_batchnorm(model, target_batches())
    return {
        "bn_affine_params": sum(p.numel() for p in params),
        "steps": len(losses),
        # Mean entropy over the first and the last fifth of the steps (one batch is noisy).
        "entropy_first": float(np.mean(losses[: max(1, len(losses) // 5)])) if losses else None,
        "entropy_last": float(np.mean(losses[-max(1, len(losses) // 5) :])) if losses else None,
        "target_images_for_statistics": n,
    }


@torch.inference_mode()
def _features(model: SceneClassifier, batches) -> np.ndarray:
    model.eval()
    out = [signed_power(model.backbone(x).float(), model.feature_power).cpu() for x in batches]
    return torch.cat(out).double().numpy()


def _sqrtm_psd(c: np.ndarray, inverse: bool = False) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    w = np.clip(w, 1e-8, None)
    return (v * (w ** (-0.5 if inverse else 0.5))) @ v.T


def adapt_coral(model: SceneClassifier, source_batches, target_batches) -> dict:
    from sklearn.covariance import LedoitWolf

    fs, ft = _features(model, source_batches()), _features(model, target_batches())
    # Ledoit-Wolf shrinkage: a 1,000-dimensional covariance from a few hundred chips is singular.
    mu_s, mu_t = fs.mean(0), ft.mean(0)
    cs, ct = LedoitWolf().fit(fs).covariance_, LedoitWolf().fit(ft).covariance_
    m = _sqrtm_psd(ct, inverse=True) @ _sqrtm_psd(cs)  # f' = (f - mu_t) m + mu_s
    first = next((layer for layer in model.head if isinstance(layer, nn.Linear)), None)
    if first is None:
        raise ConfigError("coral folds into the head's first linear layer; this head has none")
    with torch.no_grad():
        w = first.weight.double()
        mt = torch.from_numpy(m.T)
        shift = torch.from_numpy(mu_s) - mt @ torch.from_numpy(mu_t)
        first.bias.add_((w @ shift).to(first.bias.dtype))
        first.weight.copy_((w @ mt).to(first.weight.dtype))
    return {"source_images": len(fs), "target_images": len(ft), "feature_dim": fs.shape[1]}


class _GradientReversal(torch.autograd.Function):
    """Identity forward, gradient times -lambda backward (DANN); a few lines, so no dependency."""

    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lam * grad, None


def adapt_dann(
    model: SceneClassifier,
    source_pixels,
    source_labels,
    source_idx,
    target_pixels,
    normalize,
    config: AdaptConfig,
    device,
) -> dict:
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    groups = layer_groups(model)
    n_backbone = len(groups) - 1
    flags = [i >= n_backbone - config.trainable_groups for i in range(len(groups))]
    apply_trainable(groups, flags)
    bn = BatchNormPolicy(model, groups, flags, "frozen-in-frozen-groups")
    dim = model.backbone.num_features
    disc = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, 1)).to(device)
    lr = config.lr or 1e-4
    trainable = [p for g, f in zip(groups[:-1], flags[:-1], strict=True) if f for p in g.params]
    opt = torch.optim.AdamW(
        [
            {"params": trainable, "lr": lr},
            {"params": list(model.head.parameters()) + list(disc.parameters()), "lr": 10 * lr},
        ],
        weight_decay=0.01,
    )
    half = config.batch_size // 2
    steps_per_epoch = max(1, len(source_idx) // half)
    total = config.epochs * steps_per_epoch
    tgt_all = np.arange(len(target_pixels))
    step, log = 0, []
    no_labels = np.zeros(len(target_pixels), dtype=np.int64)
    tgt = _cycle(lambda: iterate_batches(target_pixels, no_labels, tgt_all, half, True, gen, True))
    for _ in range(config.epochs):
        src = iterate_batches(source_pixels, source_labels, source_idx, half, True, gen, True)
        for (xs, ys), (xt, _) in zip(src, tgt, strict=False):
            bn.train_mode(model)
            p = step / max(1, total - 1)
            lam = 2 / (1 + math.exp(-10 * p)) - 1  # Ganin et al.: domain loss phased in
            x = normalize(torch.cat([xs, xt]).to(device)).contiguous(
                memory_format=torch.channels_last
            )
            f = model.backbone(x)
            logits = model.head(signed_power(f[: len(xs)], model.feature_power))
            cls_loss = nn.functional.cross_entropy(logits, ys.to(device))
            d = disc(_GradientReversal.apply(f, lam)).squeeze(1)
            dom = torch.cat([torch.zeros(len(xs)), torch.ones(len(xt))]).to(device)
            dom_loss = nn.functional.binary_cross_entropy_with_logits(d, dom)
            opt.zero_grad(set_to_none=True)
            (cls_loss + dom_loss).backward()
            opt.step()
            step += 1
            hit = (d > 0).float().eq(dom).float().mean()
            log.append((cls_loss.item(), dom_loss.item(), hit.item()))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    last = log[-max(1, len(log) // 5) :]
    return {
        "steps": step,
        "trainable_groups": [g.name for g, f in zip(groups, flags, strict=True) if f],
        "source_images": int(len(source_idx)),
        "class_loss_end": float(np.mean([r[0] for r in last])) if log else None,
        "domain_loss_end": float(np.mean([r[1] for r in last])) if log else None,
        "domain_accuracy_end": float(np.mean([r[2] for r in last])) if log else None,
    }


def _cycle(make):
    while True:
        yield from make()


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _evaluate(model, prep, images, labels, idx, classes, batch_size, device) -> dict:
    from geotune.train import predict

    probs, _ = predict(model, prep, images.pixels, idx, batch_size, device)
    return classification_metrics(labels[idx], probs.argmax(1).numpy(), classes)


def adapt_run(
    run: Path, config: AdaptConfig, console: Console | None = None, before: dict | None = None
) -> tuple[dict, Path]:
    """Adapt the best checkpoint of ``run`` to ``config.target``; returns (summary, new run).

    ``before``: the unadapted model's metrics on the same evaluation data, when an earlier
    method already measured them (they do not depend on the method).
    """
    console = console or Console(stderr=True)
    run = require_complete_run(run)
    ckpt_path = run / "checkpoints" / "best.pt"
    if not ckpt_path.is_file():
        raise ConfigError(f"run {run} keeps no classifier checkpoint (kNN); adapt a trained run")
    device = _device(config.device)
    model, prep, ckpt = load_classifier(ckpt_path)
    classes: list[str] = ckpt["classes"]
    model.to(device)
    t0 = time.perf_counter()

    # Target chips, unlabelled by construction.
    target_folder = list_unlabelled(config.target)
    target = decode_folder(target_folder, prep.size, prep.interpolation)
    t_idx = np.arange(len(target.folder))
    if config.max_target is not None and len(t_idx) > config.max_target:
        rng = np.random.default_rng(config.seed)
        t_idx = np.sort(rng.permutation(t_idx)[: config.max_target])
    t_pix = target.pixels[t_idx] if len(t_idx) < len(target.folder) else target.pixels

    def target_batches(shuffle: bool = False):
        gen = torch.Generator().manual_seed(config.seed)
        return image_batches(
            t_pix, np.arange(len(t_pix)), config.batch_size, prep.normalize, device, shuffle, gen
        )

    # Labelled evaluation data (labels used for scoring only).
    eval_root = config.eval_data
    transductive = False
    if eval_root is None and _has_class_folders(config.target):
        eval_root, transductive = config.target, True
    evaluation = None
    if eval_root is not None:
        folder = scan_folder(eval_root)
        mapping, excluded = pair_classes(folder.classes, classes, load_class_map(config.class_map))
        ev = decode_folder(folder, prep.size, prep.interpolation)
        ev_labels = label_remap(ev.folder.classes, classes, mapping)[ev.folder.labels]
        ev_idx = np.flatnonzero(ev_labels >= 0)
        if before is None:
            before = _evaluate(model, prep, ev, ev_labels, ev_idx, classes, 64, device)
        console.log(
            f"before {config.method}: OA {100 * before['overall_accuracy']:.2f}% on "
            f"{len(ev_idx)} chips of {eval_root}"
        )
        evaluation = (ev, ev_labels, ev_idx, mapping, excluded, before)

    # Source chips (coral: features; dann: labelled training chips) from the run's own split.
    method_info: dict
    if config.method == "adabn":
        method_info = adapt_adabn(model, target_batches)
    elif config.method == "tent":
        method_info = adapt_tent(model, target_batches, config.epochs, config.lr or 1e-3)
    else:
        src_pix, src_labels, src_idx = _source_chips(run, prep)
        if config.method == "coral":
            method_info = adapt_coral(
                model,
                lambda: image_batches(src_pix, src_idx, 64, prep.normalize, device),
                target_batches,
            )
        else:
            method_info = adapt_dann(
                model, src_pix, src_labels, src_idx, t_pix, prep.normalize, config, device
            )
    adapt_seconds = time.perf_counter() - t0

    out = RunDir(config.output or run.parent, config.name or f"{run.name}-{config.method}")
    out.create()
    try:
        for f in ("config.yaml", "split.csv"):
            shutil.copy2(run / f, out.path / f)  # `geotune evaluate NEW` re-tests on the source
        save_classifier(
            out.path / "checkpoints" / "best.pt",
            model,
            {**{k: v for k, v in ckpt.items() if k not in ("format", "state_dict")}},
        )
        atomic_write_csv(
            out.path / "adaptation_images.csv",
            ["path"],
            ([target.folder.paths[i]] for i in t_idx),
        )
        summary = {
            "method": config.method,
            "source_run": str(run.resolve()),
            "target": str(Path(config.target).resolve()),
            "target_images_used": int(len(t_idx)),
            "target_labels_used": False,
            "target_listing": "every image file under the target folder; folder names not read",
            "options": config.model_dump(mode="json"),
            **{f"method_{k}": v for k, v in method_info.items()},
            "adaptation_seconds": adapt_seconds,
        }
        source_metrics = run / "test_metrics.json"
        if source_metrics.is_file():
            summary["source_test_overall_accuracy"] = json.loads(source_metrics.read_text())[
                "overall_accuracy"
            ]
        if evaluation is not None:
            ev, ev_labels, ev_idx, mapping, excluded, before = evaluation
            after = _evaluate(model, prep, ev, ev_labels, ev_idx, classes, 64, device)
            save_metrics(before, out.path, "target_before")
            save_metrics(after, out.path, "target")
            summary.update(
                evaluation_data=str(Path(eval_root).resolve()),
                evaluation_protocol="transductive (the target chips, labels only for scoring)"
                if transductive
                else "separate labelled target data",
                evaluation_images=int(len(ev_idx)),
                class_pairs=mapping,
                excluded_classes=excluded,
                target_oa_before=before["overall_accuracy"],
                target_oa_after=after["overall_accuracy"],
                gain=after["overall_accuracy"] - before["overall_accuracy"],
            )
            console.log(
                f"after {config.method}: OA {100 * after['overall_accuracy']:.2f}% "
                f"({100 * summary['gain']:+.2f} points)"
            )
        atomic_write_json(out.path / "adaptation.json", summary)
        summary["target_before_metrics"] = before if evaluation is not None else None
        atomic_write_text(out.path / "report.md", adaptation_markdown([summary]))
        final = out.commit()
    except BaseException:
        out.discard()
        raise
    return summary, final


def _source_chips(run: Path, prep):
    """The run's own training chips (pixels, labels, indices) from its config and split."""
    from geotune.evaluate import run_images

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
        "| method | target OA before | target OA after | change | verdict |",
        "|---|---|---|---|---|",
    ]
    for s in summaries:
        verdict = "helped" if s["gain"] > 0 else ("hurt" if s["gain"] < 0 else "no change")
        lines.append(
            f"| {s['method']} | {100 * s['target_oa_before']:.2f}% | "
            f"{100 * s['target_oa_after']:.2f}% | {100 * s['gain']:+.2f} pt | {verdict} |"
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
