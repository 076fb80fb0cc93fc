"""The statistics of a sweep: per strategy and label budget, mean and 95% t-interval of the
sweep's score over seeds (overall accuracy, or macro mAP for multi-label data: each row's
``score`` and ``metric``); per pair of strategies, the paired difference over seeds (same
splits)."""

from __future__ import annotations

import math

import numpy as np

ALL = "all"  # the label budget of every labelled chip

# With 2 seeds a 95% t-interval spans +-12.7 standard errors: clipped, it reads [0, 100] and can
# separate nothing, so intervals, p-values and "significantly" need at least this many seeds.
MIN_SEEDS = 3


def _t_interval(
    values: np.ndarray, bounds: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds, clipped to the possible range (none from fewer than
    MIN_SEEDS seeds)."""
    from scipy import stats

    mean = float(values.mean())
    if len(values) < MIN_SEEDS:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, max(bounds[0], mean - half), min(bounds[1], mean + half)


def summarize(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per (strategy, budget): mean and 95% CI over seeds. Per budget and strategy pair: the
    paired difference over seeds (same splits), its CI and a paired t-test p-value."""
    from scipy import stats

    table, pairs = [], []
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    budgets = list(dict.fromkeys(r["labels_per_class"] for r in rows))
    for b in budgets:
        for s in strategies:
            cell = [r for r in rows if r["strategy"] == s and r["labels_per_class"] == b]
            if not cell:
                continue
            score = np.array([r["score"] for r in cell])
            mean, lo, hi = _t_interval(score)
            kappas = [r["kappa"] for r in cell if r.get("kappa") is not None]
            gaps = [r["overfitting_gap"] for r in cell if r["overfitting_gap"] is not None]
            table.append(
                {
                    "strategy": s,
                    "labels_per_class": b,
                    "seeds": len(cell),
                    "metric": cell[0]["metric"],
                    "score_mean": mean,
                    "score_ci_low": lo,
                    "score_ci_high": hi,
                    "score_std": float(score.std(ddof=1)) if len(score) > 1 else 0.0,
                    "macro_f1_mean": float(np.mean([r["macro_f1"] for r in cell])),
                    "kappa_mean": float(np.mean(kappas)) if kappas else None,
                    "trainable_params": cell[0]["trainable_params"],
                    "train_time_s_mean": float(np.mean([r["train_time_s"] for r in cell])),
                    "peak_memory_mb_mean": float(np.mean([r["peak_memory_mb"] or 0 for r in cell])),
                    "overfitting_gap_mean": float(np.mean(gaps)) if gaps else None,
                    "n_train": cell[0]["n_train"],
                }
            )
        for i, a in enumerate(strategies):
            for c in strategies[i + 1 :]:
                by_seed = {
                    r["seed"]: r["score"]
                    for r in rows
                    if r["strategy"] == a and r["labels_per_class"] == b
                }
                diffs = np.array(
                    [
                        by_seed[r["seed"]] - r["score"]
                        for r in rows
                        if r["strategy"] == c
                        and r["labels_per_class"] == b
                        and r["seed"] in by_seed
                    ]
                )
                if not len(diffs):
                    continue
                mean, lo, hi = _t_interval(diffs, bounds=(-1.0, 1.0))
                p = (
                    float(stats.ttest_rel(diffs, np.zeros_like(diffs)).pvalue)
                    if len(diffs) >= MIN_SEEDS and diffs.std() > 0
                    else math.nan
                )
                pairs.append(
                    {
                        "labels_per_class": b,
                        "a": a,
                        "b": c,
                        "seeds": len(diffs),
                        "diff_mean": mean,
                        "diff_ci_low": lo,
                        "diff_ci_high": hi,
                        "p_value": p,
                    }
                )
    return table, pairs


def pair_of(pairs: list[dict], budget, a: str, b: str) -> dict | None:
    for p in pairs:
        if p["labels_per_class"] == budget and {p["a"], p["b"]} == {a, b}:
            if p["a"] == a:
                return p
            flipped = dict(
                p,
                a=a,
                b=b,
                diff_mean=-p["diff_mean"],
                diff_ci_low=-p["diff_ci_high"],
                diff_ci_high=-p["diff_ci_low"],
            )
            return flipped
    return None


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of overall accuracy over test chips."""
    if len(correct) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (n_boot, len(correct)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
