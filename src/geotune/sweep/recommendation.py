"""compare's recommendation: which strategy to use at each label budget, and why, from the
sweep's statistics; beside it, what `--strategy auto` would choose."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from geotune.metrics.selection import metric_name
from geotune.sweep.statistics import ALL, MIN_SEEDS, pair_of

# A cheaper strategy replaces a more accurate one only when the time it saves is material: at
# least this many seconds and this fraction of the fit. Seconds saved on a 4-second fit are not
# worth accuracy; a user reruns a fit a handful of times, not thousands.
MIN_SECONDS_SAVED = 60.0


MIN_FRACTION_SAVED = 0.25


@dataclass
class Choice:
    """compare's recommendation at one label budget: the strategy, the most accurate one, why."""

    budget: Any
    strategy: str  # what the recommendation says to use
    best: str  # the highest mean overall accuracy
    reason: str
    n_train: int


def choose(table: list[dict], pairs: list[dict]) -> list[Choice]:
    """Per label budget: the most accurate strategy, or a cheaper one when the best is not
    significantly better (paired 95% CI over at least MIN_SEEDS seeds includes 0) and the time it
    saves is material (MIN_SECONDS_SAVED and MIN_FRACTION_SAVED)."""
    choices, m = [], metric_name(table)
    for b in dict.fromkeys(t["labels_per_class"] for t in table):
        rows = sorted(
            (t for t in table if t["labels_per_class"] == b), key=lambda t: -t["score_mean"]
        )
        best = rows[0]
        choice, reason, immaterial = best, None, None
        for other in sorted(rows[1:], key=lambda t: t["train_time_s_mean"]):
            saved = best["train_time_s_mean"] - other["train_time_s_mean"]
            pair = pair_of(pairs, b, best["strategy"], other["strategy"])
            if saved <= 0 or pair is None or math.isnan(pair["diff_ci_low"]):
                continue
            if pair["diff_ci_low"] > 0:  # significantly less accurate
                continue
            ratio = other["train_time_s_mean"] / max(best["train_time_s_mean"], 1e-9)
            if saved < MIN_SECONDS_SAVED or 1 - ratio < MIN_FRACTION_SAVED:
                immaterial = immaterial or (other, saved, ratio)
                continue
            choice = other
            reason = (
                f"{_pct(other['score_mean'])} {m}, not significantly below {best['strategy']} "
                f"({_pct(best['score_mean'])}; paired difference {_pct(pair['diff_mean'], signed=True)}, "
                f"95% CI [{_pct(pair['diff_ci_low'], signed=True)}, "
                f"{_pct(pair['diff_ci_high'], signed=True)}]), and {saved:.0f} s faster to train "
                f"({ratio:.2g}x its training time)"
            )
            break
        if choice is best:
            reason = _best_reason(best, rows[1] if len(rows) > 1 else None, pairs, b, m)
            if immaterial is not None:
                other, saved, ratio = immaterial
                reason += (
                    f"; {other['strategy']} is not significantly less accurate but would save only "
                    f"{saved:.0f} s ({ratio:.2g}x the training time), too little to give up "
                    f"{_pct(best['score_mean'] - other['score_mean'], signed=True)} of mean {m}"
                )
        choices.append(Choice(b, choice["strategy"], best["strategy"], reason, choice["n_train"]))
    return choices


def _best_reason(best: dict, runner: dict | None, pairs: list[dict], budget, m: str) -> str:
    if runner is None:
        return f"{_pct(best['score_mean'])} {m}"
    pair = pair_of(pairs, budget, best["strategy"], runner["strategy"])
    if pair is None or math.isnan(pair["diff_ci_low"]):
        return (
            f"{_pct(best['score_mean'])} {m}, above {runner['strategy']} ({_pct(runner['score_mean'])}); "
            f"the difference is not tested (fewer than {MIN_SEEDS} paired seeds)"
        )
    verdict = "significantly" if pair["diff_ci_low"] > 0 else "but not significantly"
    return (
        f"{_pct(best['score_mean'])} {m}, {verdict} above {runner['strategy']} "
        f"({_pct(runner['score_mean'])}; paired difference {_pct(pair['diff_mean'], signed=True)})"
    )


def recommend(table: list[dict], pairs: list[dict]) -> list[str]:
    """One sentence per label budget (see ``choose``), and first, when the sweep has fewer than
    MIN_SEEDS seeds, a sentence saying that its intervals cannot separate strategies."""
    lines = []
    seeds = min((t["seeds"] for t in table if "seeds" in t), default=None)
    if seeds is not None and seeds < MIN_SEEDS:
        lines.append(
            f"With {seeds} seed{'s' if seeds != 1 else ''} per strategy the 95% intervals cannot "
            f"separate strategies (at least {MIN_SEEDS} are needed): the choices below go by mean "
            f"accuracy alone; rerun with --seeds {MIN_SEEDS} or more to test the differences."
        )
    for c in choose(table, pairs):
        budget = "all labelled chips" if c.budget == ALL else f"{c.budget} labels per class"
        lines.append(f"With {budget} ({c.n_train} training chips), use {c.strategy}: {c.reason}.")
    return lines


def auto_lines(rows: list[dict], table: list[dict], pairs: list[dict] | None = None) -> list[str]:
    """What `--strategy auto`'s rule (engine/auto.py, README) picks at each label budget, from the
    same runs, beside the recommendation and the highest measured accuracy: the rule, checked on
    the user's data, and never contradicting the recommendation without saying why."""
    from geotune.engine.auto import label_rule, multilabel_rule

    lines, m = [], metric_name(table)
    for c in choose(table, pairs or []):
        b = c.budget
        cells = [r for r in rows if r["labels_per_class"] == b]
        if cells[0].get("metric") == "map_macro":  # multi-label: positives per label count
            strategy, why = multilabel_rule(cells[0]["train_positives_median"])
        else:
            per_class = cells[0]["n_train"] / max(cells[0].get("n_classes") or 1, 1)
            probes = [
                r["probe_val_accuracy"] for r in cells if r.get("probe_val_accuracy") is not None
            ]
            accuracy = float(np.mean(probes)) if probes else None
            strategy, why = label_rule(per_class, accuracy)
        best = next(t for t in table if t["labels_per_class"] == b and t["strategy"] == c.best)
        budget = "all labelled chips" if b == ALL else f"{b} labels per class"

        transfer = {r["strategy"]: r["transfer_strategy"] for r in cells}
        most, recommended = transfer[c.best], transfer[c.strategy]
        line = f"With {budget}, --strategy auto would choose {strategy} ({why}); this "
        accurate = (
            f"the highest measured {'accuracy' if m == 'OA' else m} here "
            f"({c.best}, {_pct(best['score_mean'])})"
        )
        if most == recommended:
            line += f"{'agrees with' if strategy == most else 'differs from'} {accurate}"
            line += ", which is also the recommendation above."
        elif strategy == most:
            line += (
                f"agrees with {accurate}; the recommendation above prefers {c.strategy} because "
                "it is not significantly less accurate and materially faster to train."
            )
        elif strategy == recommended:
            line += (
                f"agrees with the recommendation above ({c.strategy}), which is not significantly "
                f"less accurate than {accurate} and materially faster to train."
            )
        else:
            line += f"differs from both the recommendation above ({c.strategy}) and {accurate}."
        lines.append(line)
    return lines


def _pct(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:+.1f} pt" if signed else f"{100 * x:.1f}%"
