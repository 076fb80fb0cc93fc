"""Adaptation methods: AdaBN, TENT, CORAL and DANN."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from geotune.adapt.registry import AdaptContext, AdaptMethod, register_adapt_method
from geotune.data.batches import image_batches, iterate_batches
from geotune.engine.loop import gradient_steps
from geotune.errors import ConfigError
from geotune.models.classifier import SceneClassifier, signed_power
from geotune.transfer.batchnorm import BatchNormPolicy, is_batchnorm, reestimate_batchnorm
from geotune.transfer.groups import apply_trainable, layer_groups


def adapt_adabn(ctx: AdaptContext) -> dict:
    """AdaBN (Li et al., 2016): every BN layer's statistics re-estimated on the target."""
    n = reestimate_batchnorm(ctx.model, ctx.target_batches())
    return {"bn_layers": sum(is_batchnorm(m) for m in ctx.model.modules()), "target_images": n}


def adapt_tent(ctx: AdaptContext) -> dict:
    """TENT (Wang et al., ICLR 2021): BN affine parameters minimise the prediction entropy on
    target batches (batch statistics); then AdaBN, so the saved model predicts in eval mode."""
    model, target_batches = ctx.model, ctx.target_batches
    bns = [m for m in model.modules() if is_batchnorm(m) and m.weight is not None]
    if not bns:
        raise ConfigError("tent adapts BatchNorm layers, and this backbone has none; use coral")
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for m in bns for p in (m.weight, m.bias)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=ctx.config.resolved_lr())
    model.eval()
    for m in bns:
        m.train()  # normalise with the target batch's statistics, as TENT does

    def entropy(x):
        p = model(x).float().log_softmax(-1)
        return -(p.exp() * p).sum(-1).mean(), ()  # mean prediction entropy

    losses = []
    for _ in range(ctx.config.epochs):
        losses += [r[0] for r in gradient_steps(target_batches(shuffle=True), entropy, opt)]
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


def adapt_coral(ctx: AdaptContext) -> dict:
    """CORAL (Sun et al., 2016): target feature mean and shrunk covariance aligned with the
    source's (target -> source, so the trained head is kept); the affine map is folded into
    the head's first linear layer."""
    from sklearn.covariance import LedoitWolf

    model = ctx.model
    src_pix, _, src_idx = ctx.source()
    source = image_batches(src_pix, src_idx, 64, ctx.normalize, ctx.device)
    fs, ft = _features(model, source), _features(model, ctx.target_batches())
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


def adapt_dann(ctx: AdaptContext) -> dict:
    """DANN (Ganin et al., 2016): source classification loss plus a domain classifier behind a
    gradient-reversal layer, training the last backbone groups and the head."""
    model, config, device, normalize = ctx.model, ctx.config, ctx.device, ctx.normalize
    source_pixels, source_labels, source_idx = ctx.source()
    target_pixels = ctx.target_pixels
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    groups = layer_groups(model)
    n_backbone = len(groups) - 1
    flags = [i >= n_backbone - config.trainable_groups for i in range(len(groups))]
    apply_trainable(groups, flags)
    bn = BatchNormPolicy(model, groups, flags, "frozen-in-frozen-groups")
    dim = model.backbone.num_features
    disc = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, 1)).to(device)
    lr = config.resolved_lr()
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
    no_labels = np.zeros(len(target_pixels), dtype=np.int64)
    tgt = _cycle(lambda: iterate_batches(target_pixels, no_labels, tgt_all, half, True, gen, True))
    step = 0

    def losses(batch):
        nonlocal step
        (xs, ys), (xt, _) = batch
        lam = 2 / (1 + math.exp(-10 * step / max(1, total - 1))) - 1  # domain loss phased in
        step += 1
        x = normalize(torch.cat([xs, xt]).to(device)).contiguous(memory_format=torch.channels_last)
        f = model.backbone(x)
        logits = model.head(signed_power(f[: len(xs)], model.feature_power))
        cls_loss = nn.functional.cross_entropy(logits, ys.to(device))
        d = disc(_GradientReversal.apply(f, lam)).squeeze(1)
        dom = torch.cat([torch.zeros(len(xs)), torch.ones(len(xt))]).to(device)
        dom_loss = nn.functional.binary_cross_entropy_with_logits(d, dom)
        hit = (d > 0).float().eq(dom).float().mean()
        return cls_loss + dom_loss, (cls_loss.item(), dom_loss.item(), hit.item())

    log = []
    for _ in range(config.epochs):
        src = iterate_batches(source_pixels, source_labels, source_idx, half, True, gen, True)
        steps = gradient_steps(
            zip(src, tgt, strict=False), losses, opt, lambda: bn.train_mode(model)
        )
        log += [r[1:] for r in steps]
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


register_adapt_method(
    AdaptMethod("adabn", "re-estimate BatchNorm statistics on the target chips", adapt_adabn)
)
register_adapt_method(
    AdaptMethod(
        "tent",
        "train BatchNorm affine weights to minimise prediction entropy on the target",
        adapt_tent,
        default_lr=1e-3,
    )
)
register_adapt_method(
    AdaptMethod(
        "coral",
        "align target feature mean and covariance with the source's, folded into the head",
        adapt_coral,
        needs_source=True,
    )
)
register_adapt_method(
    AdaptMethod(
        "dann",
        "train the last groups with source labels and a gradient-reversed domain classifier",
        adapt_dann,
        needs_source=True,
        default_lr=1e-4,
    )
)
