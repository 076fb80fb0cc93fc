"""Few-shot target adaptation: what k labelled target chips per class buy.

For each label budget k and seed, k chips of every target class are drawn; the rest of the
labelled target data is the held-out test. Two uses of those k chips are compared on it:

- ``source + k``: the source run's classifier fine-tuned on them (their labels mapped onto the
  model's classes; BatchNorm kept in eval mode, as batches of a few chips give no statistics);
- ``pretrained + k``: a logistic regression on the frozen features of the source run's
  *pretrained* backbone (its original weights, not the fine-tuned ones), fitted on the k chips
  alone, in the target's own classes.

The source model without adaptation is scored on the same held-out chips for reference.
"""

from __future__ import annotations

import numpy as np
import torch
from rich.console import Console
from torch import nn

from geotune.data.batches import iterate_batches
from geotune.data.classmap import label_remap, scored_labels
from geotune.engine.features import cached_features
from geotune.engine.predict import predict
from geotune.models.backbones import create_backbone
from geotune.models.classifier import load_classifier


def draw(labels: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(k chips of each class, the rest) as index arrays, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    train = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)]
    )
    return np.sort(train), np.setdiff1d(np.arange(len(labels)), train)


def _fine_tune(model, prep, pixels, y, idx, device, steps: int, lr: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(
        [
            {"params": model.backbone.parameters(), "lr": lr * 0.1},
            {"params": model.head.parameters(), "lr": lr},
        ],
        weight_decay=0.01,
    )
    done = 0
    while done < steps:
        for x, t in iterate_batches(pixels, y, idx, 16, True, gen):
            model.eval()  # BN statistics stay the source's: a few chips cannot estimate them
            x = prep.normalize(x.to(device)).contiguous(memory_format=torch.channels_last)
            loss = nn.functional.cross_entropy(model(x), t.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break


def few_shot(
    run, evaluation, budgets: list[int], seeds: int, device, console: Console | None = None
) -> list[dict]:
    """Rows (k, seed, method, held-out OA) for every budget and seed; see the module docstring."""
    console = console or Console(stderr=True)
    ckpt_path = run / "checkpoints" / "best.pt"
    source, prep, ckpt = load_classifier(ckpt_path)
    classes = ckpt["classes"]
    images, mapping = evaluation.images, evaluation.mapping
    their, theirs = images.folder.labels, images.folder.classes
    paired = np.flatnonzero(label_remap(theirs, classes, mapping)[their] >= 0)
    model_labels = label_remap(theirs, classes, mapping)[their]
    # The pretrained backbone's features of every target chip, once (cached like a probe's).
    w = ckpt["weights"]  # "offline:<package>", "hub:<id>", "file:<path>" or "random"
    net, _, weights = create_backbone(
        ckpt["backbone"], w[5:] if w.startswith("file:") else w.split(":")[0]
    )
    feats = cached_features(net, ckpt["backbone"], weights, prep, images, device=device).values
    rows = []
    for k in budgets:
        for seed in range(seeds):
            tr, te = draw(their[paired], k, seed)
            tr, te = paired[tr], paired[te]
            base = _score(source.to(device), prep, images, te, evaluation, classes, device)
            model, _, _ = load_classifier(ckpt_path)
            model.to(device)
            _fine_tune(model, prep, images.pixels, model_labels, tr, device, 30, 1e-3, seed)
            tuned = _score(model, prep, images, te, evaluation, classes, device)
            probe = _probe(feats, their, tr, te)
            rows += [
                {"k": k, "seed": seed, "method": m, "heldout_oa": v, "n_test": len(te)}
                for m, v in (("none", base), ("source + k", tuned), ("pretrained + k", probe))
            ]
            console.log(
                f"few-shot k={k} seed={seed}: source {100 * base:.1f}%, source + k "
                f"{100 * tuned:.1f}%, pretrained + k {100 * probe:.1f}%"
            )
    return rows


def _score(model, prep, images, idx, evaluation, classes, device) -> float:
    probs, _ = predict(model, prep, images.pixels, idx, 64, device)
    preds = probs.argmax(1).numpy()
    their = images.folder
    y = scored_labels(their.labels[idx], preds, their.classes, classes, evaluation.mapping)
    return float((y == preds).mean())


def _probe(feats: np.ndarray, labels: np.ndarray, tr: np.ndarray, te: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(feats[tr])
    clf = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(feats[tr]), labels[tr])
    return float((clf.predict(scaler.transform(feats[te])) == labels[te]).mean())


def few_shot_table(rows: list[dict]) -> list[dict]:
    """Mean held-out OA and a 95% t-interval over seeds, per (k, method)."""
    from scipy import stats

    out = []
    for k in sorted({r["k"] for r in rows}):
        for m in ("none", "source + k", "pretrained + k"):
            v = np.array([r["heldout_oa"] for r in rows if r["k"] == k and r["method"] == m])
            half = (
                float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
                if len(v) > 1
                else float("nan")
            )
            out.append({"k": k, "method": m, "mean": float(v.mean()), "ci_half": half})
    return out
