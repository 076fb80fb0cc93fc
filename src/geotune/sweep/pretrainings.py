"""`geotune compare --backbones`: several pretrainings under the same protocol, ranked.

Each entry is ``backbone[:weights]`` (``tf_efficientnet_lite0``, ``geoembed_resnet18:offline``,
``resnet50:/path/to/ssl4eo.pth``). Every entry runs every strategy, budget and seed on the same
splits, so pretrainings are compared pairwise exactly like strategies: the compared unit (a
"method") is ``strategy @ pretraining``, and the ranking reads the same paired statistics.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from geotune.errors import ConfigError
from geotune.metrics.selection import METRIC_NAMES
from geotune.sweep.statistics import pair_of

SEP = " @ "  # method label: "<strategy> @ <pretraining>"


@dataclass(frozen=True)
class Pretraining:
    """One ``backbone[:weights]`` entry of a compare sweep."""

    backbone: str
    weights: str | None  # None: the train options' weights (default auto)

    @property
    def label(self) -> str:
        """Short, human-readable name for tables (a path shows as its file name)."""
        if self.weights is None:
            return self.backbone
        w = self.weights
        if "/" in w or "\\" in w or Path(w).suffix:
            w = Path(w).name
        return f"{self.backbone}:{w}"

    @property
    def slug(self) -> str:
        """The label as a folder-name part (cell names must stay valid and unique)."""
        return re.sub(r"[^A-Za-z0-9_.]+", "_", self.label).strip("_")

    def train_options(self) -> dict:
        return {"backbone": self.backbone} | (
            {} if self.weights is None else {"weights": self.weights}
        )


def parse_pretrainings(entries: list[str]) -> list[Pretraining]:
    """``["a", "b:hub", "c:/x/y.pth"]`` -> Pretraining list; refuses duplicates in one line."""
    out = []
    for entry in entries:
        backbone, _, weights = entry.strip().partition(":")
        if not backbone:
            raise ConfigError(f"backbone entry '{entry}' has no backbone; write backbone[:weights]")
        out.append(Pretraining(backbone.strip(), weights.strip() or None))
    slugs = [p.slug for p in out]
    dup = sorted({s for s in slugs if slugs.count(s) > 1})
    if dup:
        raise ConfigError(
            f"--backbones lists {', '.join(dup)} more than once (cell names must be unique); "
            "list each backbone[:weights] once"
        )
    return out


def method_label(strategy: str, pretraining: Pretraining | None) -> str:
    return strategy if pretraining is None else f"{strategy}{SEP}{pretraining.label}"


def rank_pretrainings(table: list[dict], pairs: list[dict], rows: list[dict]) -> list[dict]:
    """Per strategy and budget, the pretrainings by mean score (OA, or mAP), each with its paired difference to
    the best one (same splits and seeds) and whether that difference is significant."""

    kinds = {r["strategy"]: (r["transfer_strategy"], r["pretraining"]) for r in rows}
    ranking = []
    for b in dict.fromkeys(t["labels_per_class"] for t in table):
        for s in dict.fromkeys(kinds[t["strategy"]][0] for t in table):
            group = [
                t for t in table if t["labels_per_class"] == b and kinds[t["strategy"]][0] == s
            ]
            group.sort(key=lambda t: -t["score_mean"])
            for rank, t in enumerate(group, 1):
                pair = None if rank == 1 else pair_of(pairs, b, t["strategy"], group[0]["strategy"])
                low = math.nan if pair is None else pair["diff_ci_low"]
                high = math.nan if pair is None else pair["diff_ci_high"]
                ranking.append(
                    {
                        "labels_per_class": b,
                        "transfer_strategy": s,
                        "rank": rank,
                        "pretraining": kinds[t["strategy"]][1],
                        "metric": t.get("metric", "overall_accuracy"),
                        "score_mean": t["score_mean"],
                        "score_ci_low": t["score_ci_low"],
                        "score_ci_high": t["score_ci_high"],
                        "diff_to_best": None if pair is None else pair["diff_mean"],
                        "diff_ci_low": None if pair is None else low,
                        "diff_ci_high": None if pair is None else high,
                        "p_value": None if pair is None else pair["p_value"],
                        "below_best": None if pair is None else bool(high < 0),
                        "train_time_s_mean": t["train_time_s_mean"],
                    }
                )
    return ranking


def ranking_lines(ranking: list[dict]) -> list[str]:
    """One sentence per strategy and budget: which pretraining wins, and by how much."""
    lines = []
    firsts = [r for r in ranking if r["rank"] == 1]
    for best in firsts:
        rest = [
            r
            for r in ranking
            if r["rank"] > 1
            and r["labels_per_class"] == best["labels_per_class"]
            and r["transfer_strategy"] == best["transfer_strategy"]
        ]
        budget = best["labels_per_class"]
        head = (
            f"{best['transfer_strategy']}, {budget} labels per class: best pretraining "
            f"{best['pretraining']} ({100 * best['score_mean']:.1f}% "
            f"{METRIC_NAMES[best['metric']]})"
        )
        parts = [
            f"{r['pretraining']} {100 * r['diff_to_best']:+.1f} pt"
            + (" (significant)" if r["below_best"] else " (not significant)")
            for r in rest
        ]
        lines.append(head + ("; then " + ", ".join(parts) if parts else "") + ".")
    return lines
