"""`linear-probe` and `knn`: classifiers fitted on cached features of a frozen backbone.

The features come from :mod:`geotune.engine.features` (computed once per backbone and data, then
cached). The head is scikit-learn's: logistic regression on standardised features with the
regularisation chosen on validation data, or k-nearest neighbours with k chosen the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from geotune.config import OptimisationSection, ProbeSection
from geotune.data.augment import TTA_VIEWS
from geotune.engine.fabric import cudnn_enabled, resolve_cudnn, resolve_device
from geotune.engine.features import cached_features
from geotune.engine.outputs import finish_run, write_run_header
from geotune.engine.prepare import Prepared, RunResult
from geotune.engine.streamed_probe import (
    STREAMED_MULTILABEL_ROWS,
    STREAMED_PROBE_ROWS,
    fit_standardiser,
    fit_streamed,
)
from geotune.models.classifier import save_classifier, signed_power, wrap_stages
from geotune.models.stages import stage_candidates, stage_width, with_stages
from geotune.runs.metering import peak_memory_mb, reset_peak_memory
from geotune.runs.rundir import new_run
from geotune.transfer.strategies import get_strategy

# scikit-learn's lbfgs on a few thousand chips multiplies small matrices: with every core a BLAS
# thread the 16-core GPU machine took 33 s for the probe's 10 fits, with 4 threads 1.9 s and with
# 1 thread 2.5 s (benchmarks/probe_fit_threads.py, benchmarks/results/2026-11-29-gpu-h200.md).
FIT_THREADS = 4


def fit_threads():
    """A BLAS/OpenMP thread limit for the probe's fits (see FIT_THREADS)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(min(FIT_THREADS, os.cpu_count() or 1))


def new_logistic(class_weight: str | None = None, warm_start: bool = False):
    """The probe's logistic regression (C is set per fit)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, class_weight=class_weight, warm_start=warm_start)


def fit_logistic(X, y, C: float, class_weight: str | None = None, clf=None):
    """Standardised features and a logistic regression on them: (scaler, classifier).

    ``clf``: a ``warm_start`` classifier to refit from its last solution (a regularisation path).
    """
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    clf = clf or new_logistic(class_weight)
    with fit_threads():
        return scaler, clf.set_params(C=C).fit(scaler.transform(X), y)


def _val_score(config: OptimisationSection, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Validation accuracy; with balanced class weights, average accuracy (the small classes
    count as much as the large ones, which is what the weights are for)."""
    if config.class_weights == "balanced":
        from sklearn.metrics import balanced_accuracy_score

        return float(balanced_accuracy_score(y_true, y_pred))
    return float((y_true == y_pred).mean())


def _fit_knn(X, y, k: int):
    from sklearn.neighbors import KNeighborsClassifier

    # Cosine similarity on pooled features is the usual kNN protocol for self-supervised models.
    return KNeighborsClassifier(
        n_neighbors=min(k, len(y)), metric="cosine", weights="distance"
    ).fit(X, y)


def _select(candidates, fit, score, fit_with=None) -> tuple[object, dict]:
    """The candidate with the best validation score (ties: the first listed)."""
    scores = {}
    for c in candidates:
        m = fit(c)
        scores[c] = score((*m, fit_with(c)) if fit_with else m)
    best = max(scores, key=lambda c: (scores[c], -candidates.index(c)))

    def name(c):
        if not isinstance(c, tuple):
            return str(c)
        return f"power={c[0]:g},C={c[1]:g}" + (f",stages={c[2]}" if c[2] != 1 else "")

    return best, {name(c): s for c, s in scores.items()}


@dataclass
class ProbeFit:
    """A fitted probe: test probabilities over all classes and what validation chose."""

    probs: torch.Tensor
    train_accuracy: float
    choice: dict
    save: Callable[[Path], None] | None  # writes best.pt (None: kNN keeps no checkpoint)
    # Validation probabilities of a head fitted without the validation chips: the final head is
    # refit on them, so its own validation outputs would calibrate on training data.
    val_probs: torch.Tensor | None = None


def _probe_features(prep: Prepared, backbone, stages: int, device, console: Console):
    """The cached (or freshly computed) features of every chip for a probe, logged."""
    config = prep.config
    t0 = time.perf_counter()
    passes = len(prep.images.pixels) * len(TTA_VIEWS[config.tta])
    cudnn = resolve_cudnn(config.cudnn, device, backbone, passes)
    with cudnn_enabled(cudnn or device.type != "cuda"):
        computed = cached_features(
            backbone,
            config.backbone,
            prep.weights,
            prep.preprocessing,
            prep.images,
            config.tta,
            config.seed,
            max(64, config.batch_size),
            device,
            config.feature_engine,
            console.log,
            stages,
        )
    feat_time = time.perf_counter() - t0
    how = f"{computed.engine}" + (
        f", ONNX export {computed.export_s:.1f}s" if computed.export_s else ""
    )
    console.log(
        f"features {computed.values.shape} ({config.tta} views) "
        + (
            "from cache"
            if computed.from_cache
            else f"computed in {feat_time:.1f}s ({how}) and cached"
        )
    )
    return computed, feat_time, cudnn


def probe_solver(setting: str, n_labelled: int, multilabel: bool = False) -> str:
    """``auto``: the streamed solver from STREAMED_PROBE_ROWS labelled chips (multi-label:
    STREAMED_MULTILABEL_ROWS), lbfgs below."""
    if setting != "auto":
        return setting
    threshold = STREAMED_MULTILABEL_ROWS if multilabel else STREAMED_PROBE_ROWS
    return "streamed" if n_labelled >= threshold else "lbfgs"


def fit_probe(prep: Prepared, console: Console | None = None) -> RunResult:
    """Fit and evaluate a linear probe or kNN on cached features; writes a normal run folder."""
    config = prep.config
    console = console or Console(stderr=True)
    device = resolve_device(config.device)
    reset_peak_memory(device)
    kind = get_strategy(config.strategy).probe_kind
    # kNN too: three pooled stages gained on 8 of 9 seeds over three datasets
    # (benchmarks/results/2026-11-29-recipes.md).
    candidates = stage_candidates(config.probe_stages, prep.model.backbone)
    stages = max(candidates)
    backbone = with_stages(prep.model.backbone, stages)
    computed, feat_time, cudnn = _probe_features(prep, backbone, stages, device, console)
    feats, from_cache, per_chip = computed.values, computed.from_cache, computed.seconds_per_chip
    n_labelled = len(prep.indices("train")) + len(prep.indices("val"))
    t1 = time.perf_counter()
    if kind == "logistic":
        widths = {1: feats.shape[1]}
        if stages > 1:  # each candidate's features are a prefix of the widest (models/stages.py)
            widths = {k: stage_width(backbone, k) for k in sorted(set(candidates))}
        if probe_solver(config.probe_solver, n_labelled, prep.multilabel) == "streamed":
            fitted = _streamed_logistic_probe(prep, feats, widths, device)
        elif prep.multilabel:
            fitted = _multilabel_probe(prep, np.asarray(feats), widths)
        else:
            fitted = _logistic_probe(prep, np.asarray(feats), widths)
    elif prep.multilabel:
        fitted = _multilabel_knn_probe(prep, np.asarray(feats), stages)
    else:
        fitted = _knn_probe(prep, feats, stages)
    fit_time = time.perf_counter() - t1
    summary = {
        **fitted.choice,
        "features_from_cache": from_cache,
        "train_accuracy": fitted.train_accuracy,
        "feature_time_s": feat_time,
        "feature_engine": computed.engine,
        "fit_time_s": fit_time,
        # The cost with a cold cache: the backbone once over the labelled chips, then the fit.
        "train_time_s": per_chip * n_labelled + fit_time,
        "feature_dim": int(feats.shape[1]),
        # kNN stores the labelled features instead of fitting weights.
        "trainable_params": int(feats.shape[1] * len(prep.classes) + len(prep.classes))
        if fitted.save
        else 0,
        "total_params": sum(p.numel() for p in prep.model.parameters()),
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
        "cudnn": cudnn,
        "note": f"views '{config.tta}' are averaged into every chip's features, "
        "train and test alike",
    }
    kept = (
        "nothing of the run was kept (it has no epochs to resume); run the same command again: "
        "decoded chips and finished feature caches are reused"
    )
    with new_run(config).staged(kept=kept, resumable=False) as run:
        write_run_header(run, prep)
        if fitted.save is not None:
            fitted.save(run.path / "checkpoints" / "best.pt")
        return finish_run(
            run, prep, fitted.probs, fitted.probs, summary, console, val_scores=fitted.val_probs
        )


def _all_classes(prep: Prepared, probs: np.ndarray, present: np.ndarray) -> torch.Tensor:
    # Classes absent from the labelled part get probability 0 (sklearn orders by label value).
    full = np.zeros((len(probs), len(prep.classes)), dtype=np.float32)
    full[:, present] = probs
    return torch.from_numpy(full)


def _candidates(config: ProbeSection, feats: np.ndarray, widths: dict[int, int]):
    """The probe's (power, C, stages) candidates, C ascending within each feature set; the
    features of a candidate (power-normalised once per power, a prefix per stage count); and the
    candidate used when there is no validation part."""
    Cs = sorted(config.probe_c)
    cands = [(a, c, k) for k in widths for a in config.probe_power for c in Cs]
    powered = {a: signed_power(torch.from_numpy(feats), a).numpy() for a in config.probe_power}

    def features(cand):
        return powered[cand[0]][:, : widths[cand[2]]]

    # Without validation chips: the middle C on the final features, unpowered.
    default = (1.0, Cs[len(Cs) // 2], min(widths))
    return cands, features, default


def _logistic_probe(prep: Prepared, feats: np.ndarray, widths: dict[int, int]) -> ProbeFit:
    """``widths``: stage count -> width of its feature prefix (see models/stages.py)."""
    config, y = prep.config, prep.images.folder.labels
    tr, va, te = prep.indices("train"), prep.indices("val"), prep.indices("test")
    lab = np.concatenate([tr, va])
    # Regularisation, power normalisation and stages are chosen together on validation data.
    # Each feature set's C path runs from strong to weak regularisation, every fit starting from
    # the previous solution (warm start): 1.5-1.9x faster, the same choice up to solver tolerance.
    cands, features, default = _candidates(config, feats, widths)

    weight = None if config.class_weights == "none" else config.class_weights
    paths: dict = {}

    def fit_on_path(cand):
        key = (cand[0], cand[2])  # one warm-started path per (power, stages)
        if key not in paths:
            paths[key] = new_logistic(weight, warm_start=True)
        return fit_logistic(features(cand)[tr], y[tr], cand[1], weight, paths[key])

    if len(va):
        best, scores = _select(
            cands,
            fit_on_path,
            lambda m: _val_score(config, y[va], m[1].predict(m[0].transform(m[2][va]))),
            fit_with=features,
        )
    else:
        best, scores = default, {}
    power, C, stages = best
    Z = features(best)
    scaler, clf = fit_logistic(Z[lab], y[lab], C, weight)  # refit on all labelled chips
    val_probs = None
    if len(va):  # for the temperature (see ProbeFit.val_probs)
        held_scaler, held = fit_logistic(Z[tr], y[tr], C, weight)
        val_probs = _all_classes(
            prep, held.predict_proba(held_scaler.transform(Z[va])), held.classes_
        )
    probs = clf.predict_proba(scaler.transform(Z[te]))
    return ProbeFit(
        _all_classes(prep, probs, clf.classes_),
        float(clf.score(scaler.transform(Z[lab]), y[lab])),
        {
            "C": C,
            "feature_power": power,
            "probe_stages": stages,
            "probe_solver": "lbfgs",
            "val_accuracy_by_power_and_C": scores,
        },  # fmt: skip
        # Fold the scaler into one nn.Linear: the run's checkpoint is an ordinary classifier.
        lambda path: _save_linear_head(path, prep, scaler, clf, power, stages),
        val_probs,
    )


def fit_one_vs_rest(X, Y, C: float):
    """Standardised features and one logistic regression per label: (scaler, classifier)."""
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    with fit_threads():
        return scaler, OneVsRestClassifier(new_logistic().set_params(C=C)).fit(
            scaler.transform(X), Y
        )


def _multilabel_probe(prep: Prepared, feats: np.ndarray, widths: dict[int, int]) -> ProbeFit:
    """The one-vs-rest counterpart of ``_logistic_probe``: the same candidates (power, C,
    stages), chosen on validation macro mAP; sigmoid probabilities per label."""
    from geotune.metrics.selection import macro_average_precision

    config, Y = prep.config, prep.targets
    tr, va, te = prep.indices("train"), prep.indices("val"), prep.indices("test")
    lab = np.concatenate([tr, va])
    cands, features, default = _candidates(config, feats, widths)

    def probs_of(m, Z):
        return m[1].predict_proba(m[0].transform(Z))

    if len(va):
        best, scores = _select(
            cands,
            lambda cand: fit_one_vs_rest(features(cand)[tr], Y[tr], cand[1]),
            lambda m: macro_average_precision(Y[va], probs_of(m, m[2][va])),
            fit_with=features,
        )
    else:
        best, scores = default, {}
    power, C, stages = best
    Z = features(best)
    fitted = fit_one_vs_rest(Z[lab], Y[lab], C)  # refit on all labelled chips
    val_probs = None
    if len(va):  # for the thresholds (see ProbeFit.val_probs)
        val_probs = torch.from_numpy(probs_of(fit_one_vs_rest(Z[tr], Y[tr], C), Z[va])).float()
    train_acc = float(((probs_of(fitted, Z[lab]) >= 0.5) == Y[lab].astype(bool)).mean())
    return ProbeFit(
        torch.from_numpy(probs_of(fitted, Z[te])).float(),
        train_acc,  # label-wise (1 - Hamming loss) at 0.5
        {
            "C": C,
            "feature_power": power,
            "probe_stages": stages,
            "probe_solver": "lbfgs one-vs-rest",
            "val_map_by_power_and_C": scores,
        },
        lambda path: _save_multilabel_head(path, prep, *fitted, power, stages),
        val_probs,
    )


def _save_multilabel_head(path: Path, prep, scaler, ovr, power: float, stages: int) -> None:
    """The one-vs-rest probe folded into the classifier's nn.Linear: logit j = label j's."""
    rows, bias = [], []
    for est in ovr.estimators_:
        if hasattr(est, "coef_"):
            rows.append(est.coef_[0])
            bias.append(est.intercept_[0])
        else:  # a label constant in the labelled chips: sklearn keeps a constant predictor
            rows.append(np.zeros(scaler.mean_.shape))
            bias.append(1e4 if est.y_[0] else -1e4)
    coef = np.stack(rows)
    W = coef / scaler.scale_[None, :]
    b = np.asarray(bias) - (coef * (scaler.mean_ / scaler.scale_)[None, :]).sum(1)
    _write_linear_head(path, prep, torch.from_numpy(W).float(), torch.from_numpy(b).float(),
                       power, stages)  # fmt: skip


def _write_linear_head(path: Path, prep, weight, bias, power: float, stages: int) -> None:
    model = prep.model
    if stages > 1:  # the checkpoint computes the same concatenated stage features
        wrap_stages(model, stages, prep.config.head, prep.config.head_dropout)
    linear = model.head[-1]
    if not isinstance(linear, nn.Linear) or len(model.head) != 2:
        return  # an MLP head has no closed form from a linear probe
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    model.feature_power = power
    meta = {**prep.checkpoint_meta(), "feature_power": power, "epoch": 0}
    save_classifier(path, model, {**meta, **({"probe_stages": stages} if stages > 1 else {})})


def _streamed_logistic_probe(prep: Prepared, feats, widths: dict[int, int], device) -> ProbeFit:
    """The logistic probe of ``_logistic_probe`` for large labelled sets: the same candidates
    chosen the same way on validation, fitted by streaming the cached features (see
    streamed_probe); the model fitted on the training chips gives the validation outputs.
    Multi-label chips: one-vs-rest (a sigmoid per label), chosen on validation macro mAP, as
    ``_multilabel_probe``."""
    from geotune.metrics.selection import macro_average_precision

    config, y, multi = prep.config, prep.targets, prep.multilabel
    tr, va, te = prep.indices("train"), prep.indices("val"), prep.indices("test")
    lab = np.concatenate([tr, va])
    weight = None if config.class_weights == "none" or multi else config.class_weights
    scalers = {(a, k): fit_standardiser(feats, tr, a, w) for k, w in widths.items()
               for a in config.probe_power}  # fmt: skip
    fits: dict = {}
    for (a, k), scaler in scalers.items():
        warm = None  # each (power, stages) path warm-starts from strong to weak regularisation
        for c in sorted(config.probe_c):
            warm = fits[(a, c, k)] = fit_streamed(
                feats, y, tr, scaler, c, device, config.seed, warm, weight
            )

    def val_score(m):
        probs = m.predict_proba(feats, va, device)
        if multi:
            return macro_average_precision(y[va], probs)
        return _val_score(config, y[va], m.classes_[probs.argmax(1)])

    scores = {c: val_score(m) for c, m in fits.items()} if len(va) else {}
    best = max(scores, key=lambda c: (scores[c], -list(fits).index(c))) if len(va) else None
    power, C, stages = best or (1.0, sorted(config.probe_c)[len(config.probe_c) // 2], min(widths))
    scaler = fit_standardiser(feats, lab, power, widths[stages])
    clf = fit_streamed(feats, y, lab, scaler, C, device, config.seed, fits.get(best), weight)
    val_probs = None
    if best is not None:
        held = fits[best]
        val_probs = _all_classes(prep, held.predict_proba(feats, va, device), held.classes_)
    lab_probs = clf.predict_proba(feats, lab, device)
    if multi:  # label-wise (1 - Hamming loss) at 0.5, as _multilabel_probe
        train_acc = float(((lab_probs >= 0.5) == y[lab].astype(bool)).mean())
    else:
        train_acc = float((clf.classes_[lab_probs.argmax(1)] == y[lab]).mean())
    key = "val_map_by_power_and_C" if multi else "val_accuracy_by_power_and_C"
    choice = {
        "C": C,
        "feature_power": power,
        "probe_stages": stages,
        "probe_solver": "streamed one-vs-rest" if multi else "streamed",
        key: {
            f"power={a:g},C={c:g}" + (f",stages={k}" if k != 1 else ""): s
            for (a, c, k), s in scores.items()
        },
    }
    return ProbeFit(
        _all_classes(prep, clf.predict_proba(feats, te, device), clf.classes_),
        train_acc,
        choice,
        lambda path: _save_linear_head(path, prep, clf.scaler, clf, power, stages),
        val_probs,
    )


def _knn_probe(prep: Prepared, feats: np.ndarray, stages: int) -> ProbeFit:
    config, y = prep.config, prep.images.folder.labels
    tr, va, te = prep.indices("train"), prep.indices("val"), prep.indices("test")
    lab = np.concatenate([tr, va])
    cands = list(config.knn_k)
    if len(va):
        best, scores = _select(
            cands,
            lambda k: _fit_knn(feats[tr], y[tr], k),
            lambda m: float((m.predict(feats[va]) == y[va]).mean()),
        )
    else:
        best, scores = cands[len(cands) // 2], {}
    knn = _fit_knn(feats[lab], y[lab], best)
    return ProbeFit(
        _all_classes(prep, knn.predict_proba(feats[te]), knn.classes_),
        float(knn.score(feats[lab], y[lab])),
        {"k": best, "val_accuracy_by_k": scores, "probe_stages": stages},
        None,
    )


def _multilabel_knn_probe(prep: Prepared, feats: np.ndarray, stages: int) -> ProbeFit:
    """kNN voting per label: a label's probability is the distance-weighted share of the k
    nearest labelled chips (cosine) that carry it (scikit-learn's KNeighborsRegressor on the
    multi-hot rows is exactly that vote); k chosen on validation macro mAP."""
    from sklearn.neighbors import KNeighborsRegressor

    from geotune.metrics.selection import macro_average_precision

    config, Y = prep.config, prep.targets.astype(np.float32)
    tr, va, te = prep.indices("train"), prep.indices("val"), prep.indices("test")
    lab = np.concatenate([tr, va])

    def fit(rows, k):
        return KNeighborsRegressor(n_neighbors=min(k, len(rows)), metric="cosine",
                                   weights="distance").fit(feats[rows], Y[rows])  # fmt: skip

    cands = list(config.knn_k)
    if len(va):
        best, scores = _select(
            cands,
            lambda k: fit(tr, k),
            lambda m: macro_average_precision(Y[va], m.predict(feats[va])),
        )
    else:
        best, scores = cands[len(cands) // 2], {}
    knn = fit(lab, best)
    val_probs = torch.from_numpy(fit(tr, best).predict(feats[va])).float() if len(va) else None
    train_acc = float(((knn.predict(feats[lab]) >= 0.5) == Y[lab].astype(bool)).mean())
    return ProbeFit(
        torch.from_numpy(knn.predict(feats[te])).float(),
        train_acc,  # label-wise (1 - Hamming loss) at 0.5
        {"k": best, "val_map_by_k": scores, "probe_stages": stages},
        None,
        val_probs,
    )


def _save_linear_head(path: Path, prep, scaler, clf, power: float, stages: int = 1) -> None:
    W = clf.coef_ / scaler.scale_[None, :]
    b = clf.intercept_ - (clf.coef_ * (scaler.mean_ / scaler.scale_)[None, :]).sum(1)
    weight = torch.zeros(len(prep.classes), W.shape[1])
    bias = torch.full((len(prep.classes),), -1e4)  # a class never labelled is never predicted
    if W.shape[0] == 1:  # binary problems: sklearn keeps one row
        W, b = np.vstack([-W / 2, W / 2]), np.array([-b[0] / 2, b[0] / 2])
    weight[clf.classes_] = torch.from_numpy(W).float()
    bias[clf.classes_] = torch.from_numpy(b).float()
    _write_linear_head(path, prep, weight, bias, power, stages)
