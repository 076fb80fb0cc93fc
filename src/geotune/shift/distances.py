"""Feature-space distances between two samples: MMD, Frechet distance, domain classifier."""

from __future__ import annotations

from typing import Any

import numpy as np

from geotune.errors import DataError


def _project(a: np.ndarray, b: np.ndarray, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Both samples in the first ``dim`` principal components of their union, standardised
    by the union's spread: covariance estimates from a few hundred chips are only stable in a
    few dozen dimensions, and a common frame keeps the three distances comparable."""
    from sklearn.decomposition import PCA

    both = np.concatenate([a, b]).astype(np.float64)
    # At most one dimension per 5 chips of the smaller sample, or the covariances are noise.
    dim = max(2, min(dim, both.shape[1], min(len(a), len(b)) // 5))
    pca = PCA(dim, svd_solver="full", random_state=seed).fit(both)
    z = pca.transform(both)
    z /= z.std() + 1e-12
    return z[: len(a)], z[len(a) :]


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.maximum(d, 0)


def _mmd2(k: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> float:
    """Unbiased MMD^2 from a kernel matrix over the union and index sets of A and B.

    Pairs of a chip with itself are left out (the U-statistic); in a bootstrap resample that
    includes pairs of a chip with its own duplicates, which would bias the estimate upwards.
    """
    kaa, kbb, kab = k[np.ix_(ia, ia)], k[np.ix_(ib, ib)], k[np.ix_(ia, ib)]
    same_a, same_b = ia[:, None] == ia[None, :], ib[:, None] == ib[None, :]
    return float(kaa[~same_a].mean() + kbb[~same_b].mean() - 2 * kab.mean())


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(ca @ cb)
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # round-off gives tiny imaginary parts
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * covmean))


def _domain_predictions(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """Held-out correctness of a logistic-regression domain classifier (5-fold), on equal-size
    samples so that chance is 50%."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    a, b = a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]
    x = np.concatenate([a, b])
    y = np.r_[np.zeros(n), np.ones(n)]
    folds = StratifiedKFold(n_splits=min(5, n), shuffle=True, random_state=seed)
    pred = cross_val_predict(LogisticRegression(C=1.0, max_iter=2000), x, y, cv=folds)
    return (pred == y).astype(float)


def feature_distances(
    a: np.ndarray, b: np.ndarray, n_boot: int = 200, seed: int = 0, dim: int = 32
) -> dict[str, Any]:
    """MMD^2, Frechet distance and domain-classifier accuracy / proxy A-distance between two
    feature samples, each with a 95% percentile bootstrap interval (resampling chips of both
    domains; for the classifier, resampling its held-out predictions)."""
    if len(a) < 4 or len(b) < 4:
        raise DataError(
            f"too few chips to measure a shift ({len(a)} and {len(b)}; at least 4 each)"
        )
    za, zb = _project(a, b, dim, seed)
    both = np.concatenate([za, zb])
    d2 = _sq_dists(both, both)
    bandwidth = float(np.median(d2[np.triu_indices(len(both), 1)]))  # median heuristic
    k = np.exp(-d2 / max(bandwidth, 1e-12))
    ia, ib = np.arange(len(za)), len(za) + np.arange(len(zb))
    correct = _domain_predictions(za, zb, seed)
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {"mmd2": [], "frechet": [], "domain_accuracy": []}
    for _ in range(n_boot):
        ra, rb = rng.choice(ia, len(ia)), rng.choice(ib, len(ib))
        boots["mmd2"].append(_mmd2(k, ra, rb))
        boots["frechet"].append(_frechet(both[ra], both[rb]))
        boots["domain_accuracy"].append(
            float(correct[rng.integers(0, len(correct), len(correct))].mean())
        )
    acc = float(correct.mean())
    values = {
        "mmd2": _mmd2(k, ia, ib),
        "frechet": _frechet(za, zb),
        "domain_accuracy": acc,
    }
    out: dict[str, Any] = {"n_a": len(a), "n_b": len(b), "dim": za.shape[1]}
    for name, v in values.items():
        lo, hi = np.percentile(boots[name], [2.5, 97.5])
        out[name] = {"value": v, "ci_low": float(lo), "ci_high": float(hi)}
    # Proxy A-distance (Ben-David et al.): 2 (1 - 2 err), with err the classifier's error.
    pad = [2 * (2 * x - 1) for x in (acc, *np.percentile(boots["domain_accuracy"], [2.5, 97.5]))]
    out["proxy_a_distance"] = {"value": pad[0], "ci_low": pad[1], "ci_high": pad[2]}
    out["mmd_bandwidth"] = bandwidth
    return out
