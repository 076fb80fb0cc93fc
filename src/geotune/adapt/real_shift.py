"""Adaptation methods aimed at real shifts between scene datasets, both source-free.

- ``rescale``: ground-resolution matching. Scene datasets differ most in the ground sampling
  distance (GSD) at which a class is seen; resizing every chip to the backbone's input size
  silently keeps that difference. With ``--source-gsd`` and ``--target-gsd`` (metres per pixel
  of the chips as stored) the zoom that shows target objects at the size the model was trained
  on is computed; without them it is searched among ``--zooms`` by the mean confidence of the
  model on the target chips (label-free). The zoom becomes part of the classifier.
- ``label-set``: the target's own label set, declared by the class map (the model classes its
  classes pair with), not read from any chip: the model's other outputs are switched off by
  folding a large negative bias into the head. Scene datasets share only part of their legends
  (RSSCN7's 7 classes pair with 10 of AID's 30), and a source model spreads many target chips
  over classes the target cannot contain; label-shift estimators that infer the label set from
  the predictions (EM on the class priors, Saerens et al. 2002) follow the model's own
  confusions instead. Combine it with the others: ``label-set+shot`` adapts within that set.
- ``shot`` (Liang et al., ICML 2020): the head is kept; the backbone is trained with information
  maximisation (confident per-chip predictions, balanced over the classes in use) plus
  cross-entropy on pseudo-labels refined by feature clustering, on random rotation/flip views
  of the target chips (augmentation consistency); BN statistics are then re-estimated.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from geotune.adapt.registry import AdaptContext, AdaptMethod, register_adapt_method
from geotune.adapt.signals import view_probabilities
from geotune.data.augment import tta_view
from geotune.data.batches import iterate_batches
from geotune.data.classmap import check_model_classes, load_class_map
from geotune.data.raster import chip_side
from geotune.engine.loop import gradient_steps
from geotune.errors import ConfigError
from geotune.models.classifier import signed_power
from geotune.transfer.batchnorm import is_batchnorm, reestimate_batchnorm


def _chip_size(root, first_file) -> int:
    return chip_side(root / first_file)  # any band count


def adapt_rescale(ctx: AdaptContext) -> dict:
    """Choose the input zoom for the target chips and fold it into the classifier."""
    cfg, model = ctx.config, ctx.model
    if (cfg.source_gsd is None) != (cfg.target_gsd is None):
        raise ConfigError(
            "give both --source-gsd and --target-gsd (metres per pixel of the source run's "
            "chips and of the target chips), or neither to search the zoom"
        )
    if cfg.source_gsd is not None:
        # Footprint ratio: a target chip covers (gsd_t * size_t) metres, a source chip
        # (gsd_s * size_s); both are resized to the same input size.
        source_size = _chip_size(*ctx.source_example())
        target_size = ctx.target_native_size
        zoom = (cfg.target_gsd * target_size) / (cfg.source_gsd * source_size)
        model.input_zoom = float(zoom)
        return {"zoom": zoom, "zoom_from": "ground sampling distances"}
    rng = np.random.default_rng(cfg.seed)
    n = len(ctx.target_pixels)
    probe = np.sort(rng.permutation(n)[: min(n, 300)])  # enough chips to rank a few zooms
    scores = {}
    for z in cfg.zooms:
        model.input_zoom = float(z)
        views = view_probabilities(model, ctx.normalize, ctx.target_pixels[probe], ctx.device)
        scores[z] = float(views[0].max(1).mean())
    best = max(scores, key=lambda z: (scores[z], -abs(np.log(z))))  # ties: the smaller change
    model.input_zoom = float(best)
    return {
        "zoom": float(best),
        "zoom_from": "searched: highest mean confidence on the target chips",
        "mean_confidence_by_zoom": {str(z): s for z, s in scores.items()},
    }


# Added to the logits of classes outside the label set: their probability underflows to 0, while
# the value stays finite in float16 (ONNX export, mixed precision).
MASKED_LOGIT = -1.0e4


def declared_label_set(class_map_path, classes: list[str]) -> np.ndarray:
    """Boolean over the model's classes: those the class map pairs a target class with."""
    mapping = load_class_map(class_map_path)
    if mapping is None:
        raise ConfigError(
            "label-set needs --class-map MAP.yaml pairing the target's classes with the "
            "model's (it declares which model classes the target can hold)"
        )
    check_model_classes(mapping, classes)
    kept = {c for values in mapping.values() for c in values}
    return np.array([c in kept for c in classes])


def restrict_views(views: list[np.ndarray], allowed: np.ndarray) -> list[np.ndarray]:
    """Probabilities renormalised over the allowed classes (what label-set makes of them)."""
    out = []
    for p in views:
        q = np.where(allowed, p, 0.0)
        out.append(q / np.maximum(q.sum(1, keepdims=True), 1e-12))
    return out


def adapt_label_set(ctx: AdaptContext) -> dict:
    """Switch off the model classes the target cannot hold (folded into the head's bias)."""
    allowed = declared_label_set(ctx.config.class_map, ctx.classes)
    last = [layer for layer in ctx.model.head.modules() if isinstance(layer, nn.Linear)]
    if not last or last[-1].bias is None or last[-1].out_features != len(allowed):
        raise ConfigError("label-set folds into the head's output layer; this head has none")
    with torch.no_grad():
        last[-1].bias[torch.from_numpy(~allowed)] += MASKED_LOGIT
    return {
        "kept_classes": [c for c, a in zip(ctx.classes, allowed, strict=True) if a],
        "masked_classes": int((~allowed).sum()),
    }


@torch.inference_mode()
def _pseudo_labels(model, ctx: AdaptContext) -> tuple[np.ndarray, np.ndarray]:
    """SHOT's clustering-refined pseudo-labels: class centroids of the (normalised) features
    weighted by the predictions, then one round of hard assignment. Classes the model hardly
    predicts on the target get no centroid (class-balance awareness). Returns (labels, trusted):
    a label is trusted when the clustering and the model's own prediction agree."""
    model.eval()
    feats, probs = [], []
    for x in ctx.target_batches():
        f = signed_power(model.backbone(x).float(), model.feature_power)
        feats.append(f.cpu())
        probs.append(model.head(f).softmax(-1).cpu())
    f = nn.functional.normalize(torch.cat(feats), dim=1).numpy()
    p = torch.cat(probs).numpy()
    used = p.sum(0) >= max(1.0, 0.01 * len(p))
    centroids = (p[:, used].T @ f) / p[:, used].sum(0)[:, None]
    for _ in range(2):
        norms = np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-8)
        sim = f @ (centroids / norms).T  # an emptied cluster scores 0 and stays empty
        assign = sim.argmax(1)
        onehot = np.eye(used.sum())[assign]
        centroids = (onehot.T @ f) / np.maximum(onehot.sum(0)[:, None], 1e-8)
    labels = np.flatnonzero(used)[assign]
    return labels, labels == p.argmax(1)


def adapt_shot(ctx: AdaptContext) -> dict:
    """Information maximisation + clustering pseudo-labels on the backbone; the head is kept."""
    model, cfg = ctx.model, ctx.config
    for p in model.head.parameters():
        p.requires_grad_(False)
    params = [p for p in model.backbone.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.resolved_lr(), momentum=0.9, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    log, trusted_share = [], []
    for _ in range(cfg.epochs):
        labels, trusted = _pseudo_labels(model, ctx)
        trusted_share.append(float(trusted.mean()))
        target = np.where(trusted, labels, -100)  # untrusted chips: information loss only

        def losses(batch):
            x, y = batch
            turns, flip = int(torch.randint(4, (1,))), bool(torch.randint(2, (1,)))
            x = ctx.normalize(x.to(ctx.device))
            x = tta_view(x, turns, flip).contiguous(memory_format=torch.channels_last)
            logits = model(x).float()
            p = logits.softmax(-1)
            entropy = -(p * torch.log(p + 1e-8)).sum(1).mean()
            mean = p.mean(0)
            diversity = -(mean * torch.log(mean + 1e-8)).sum()
            y = y.to(ctx.device)
            ce = nn.functional.cross_entropy(logits, y, ignore_index=-100) if (y >= 0).any() else 0
            return entropy - diversity + 0.3 * ce, (entropy.item(), diversity.item())

        model.train()  # BN normalises with target batch statistics while training, as in SHOT
        batches = iterate_batches(
            ctx.target_pixels, target, np.arange(len(target)), cfg.batch_size, True, gen, True
        )
        log += gradient_steps(batches, losses, opt)
    for p in model.parameters():
        p.requires_grad_(True)
    n = reestimate_batchnorm(model, ctx.target_batches())
    model.eval()
    last = log[-max(1, len(log) // 5) :]
    return {
        "steps": len(log),
        "trusted_pseudo_labels": trusted_share,
        "entropy_end": float(np.mean([r[1] for r in last])) if log else None,
        "diversity_end": float(np.mean([r[2] for r in last])) if log else None,
        "bn_layers": sum(is_batchnorm(m) for m in model.modules()),
        "target_images_for_statistics": n,
    }


register_adapt_method(
    AdaptMethod(
        "rescale",
        "match the ground resolution: zoom target chips (from --source-gsd/--target-gsd, or "
        "searched label-free)",
        adapt_rescale,
    )
)
register_adapt_method(
    AdaptMethod(
        "label-set",
        "keep only the model classes the class map pairs with the target's (no target labels "
        "read); combine, e.g. label-set+shot",
        adapt_label_set,
    )
)
register_adapt_method(
    AdaptMethod(
        "shot",
        "self-training: information maximisation and clustering pseudo-labels on rotated views "
        "(SHOT), head kept",
        adapt_shot,
        default_lr=1e-3,
    )
)
