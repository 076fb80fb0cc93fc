"""Reports: a self-contained `report.html` (images embedded, opens offline) and `report.md`.

For a compare sweep: the measured strategy table, the data-efficiency curve, learning curves,
the best run's confusion matrix, its most confused class pairs with example chips, and the
recommendation computed from the results. For a single run: the same minus the sweep parts.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from geotune.errors import ConfigError
from geotune.fileio import atomic_write_bytes, atomic_write_text
from geotune.metrics.selection import metric_name
from geotune.runs.artifacts import (
    SUMMARY_FILE,
    TEST_METRICS_FILE,
    RunSummary,
    TestMetrics,
    read_run_config,
)
from geotune.runs.paths import staging_of
from geotune.runs.rundir import unfinished_message

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
img.plot{max-width:100%}.thumbs img{margin:2px;border:1px solid #999}.rec{background:#eef6ee;padding:1em}
"""


class _Doc:
    """Builds the HTML and Markdown versions side by side; PNGs go inline (HTML) and to files (MD)."""

    def __init__(self, folder: Path, title: str):
        self.folder, self.html, self.md, self.n = (
            folder,
            [f"<h1>{html.escape(title)}</h1>"],
            [f"# {title}", ""],
            0,
        )
        (folder / "report_assets").mkdir(exist_ok=True)

    def h2(self, text: str) -> None:
        self.html.append(f"<h2>{html.escape(text)}</h2>")
        self.md += [f"## {text}", ""]

    def para(self, text: str, cls: str = "") -> None:
        self.html.append(f"<p class='{cls}'>{html.escape(text)}</p>")
        self.md += [text, ""]

    def table(self, header: list[str], rows: list[list]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
        )
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        self.md += ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
        self.md += ["| " + " | ".join(map(str, r)) + " |" for r in rows] + [""]

    def figure(self, fig, alt: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.n += 1
        name = f"report_assets/figure{self.n}.png"
        atomic_write_bytes(self.folder / name, buf.getvalue())
        data = base64.b64encode(buf.getvalue()).decode()
        self.html.append(
            f"<img class='plot' alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"
        )
        self.md += [f"![{alt}]({name})", ""]

    def thumbs(self, label: str, images: list[tuple[str, bytes]]) -> None:
        tags = "".join(
            f"<img alt='{html.escape(cap)}' title='{html.escape(cap)}' src='data:image/jpeg;base64,{base64.b64encode(b).decode()}'>"
            for cap, b in images
        )
        self.html.append(f"<div class='thumbs'><p>{html.escape(label)}</p>{tags}</div>")
        md_imgs = []
        for cap, b in images:
            self.n += 1
            name = f"report_assets/thumb{self.n}.jpg"
            atomic_write_bytes(self.folder / name, b)
            md_imgs.append(f"![{cap}]({name})")
        self.md += [f"{label}: " + " ".join(md_imgs), ""]

    def write(self) -> Path:
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>geotune report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(self.html) + "</body></html>"
        )
        atomic_write_text(self.folder / "report.html", page)
        atomic_write_text(self.folder / "report.md", "\n".join(self.md) + "\n")
        return self.folder / "report.html"


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _interval(low, high) -> str:
    """A 95% interval in points; compare leaves none below 3 seeds (see sweep.statistics.MIN_SEEDS)."""
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return "n/a (< 3 seeds)"
    return f"[{_pct(low)}, {_pct(high)}]"


def _confusion_figure(metrics: dict):
    cm = np.array(metrics["confusion_matrix"], dtype=float)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(metrics["classes"])
    fig, ax = plt.subplots(figsize=(min(2 + 0.35 * k, 14), min(1.6 + 0.35 * k, 13)))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), metrics["classes"], rotation=90, fontsize=7)
    ax.set_yticks(range(k), metrics["classes"], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.03, label="share of the true class")
    ax.set_title(f"confusion matrix (OA {_pct(metrics['overall_accuracy'])}%)")
    return fig


def _learning_figure(curves: dict[str, list[dict]]):
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, hist in curves.items():
        ep = [int(r["epoch"]) for r in hist]
        key = "val_map" if hist and "val_map" in hist[0] else "val_accuracy"  # multi-label: mAP
        if hist and hist[0].get(key) not in (None, ""):
            line = ax.plot(
                ep, [100 * float(r[key]) for r in hist], marker="o", label=f"{label} val"
            )
            ax.plot(
                ep,
                [100 * float(r["train_accuracy"]) for r in hist],
                ls="--",
                color=line[0].get_color(),
                label=f"{label} train",
            )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("learning curves")
    return fig


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _confused_pairs(doc: _Doc, run: Path, n_pairs: int = 5, per_pair: int = 4) -> None:
    preds = _read_csv(run / "test_predictions.csv")
    wrong = [p for p in preds if p["true"] != p["predicted"]]
    if not wrong:
        doc.para("No test chip was misclassified.")
        return
    counts = Counter((p["true"], p["predicted"]) for p in wrong)
    data_root = read_run_config(run).data
    doc.table(
        ["true class", "predicted as", "chips"],
        [[t, p, n] for (t, p), n in counts.most_common(n_pairs)],
    )
    from geotune.data.raster import preview_image

    for (t, p), _ in counts.most_common(n_pairs):
        shots = []
        for row in [w for w in wrong if (w["true"], w["predicted"]) == (t, p)][:per_pair]:
            try:
                # 8-bit RGB; multispectral chips as a true-colour composite
                im = preview_image(data_root / row["path"])
                im.thumbnail((96, 96))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=85)
                shots.append((f"{row['path']} ({float(row['confidence']):.2f})", buf.getvalue()))
            except OSError:
                continue  # the data moved since the run: the table above still stands
        if shots:
            doc.thumbs(f"{t} predicted as {p}", shots)


def run_report(run: Path, title: str | None = None) -> Path:
    """report.html / report.md of one run folder.

    Args:
        run: the run folder (finished, or still in staging when ``train`` writes the report).
        title: the run's name (a staging folder's own name is ``.NAME.partial``).

    Returns:
        The path of report.html.
    """
    run = Path(run)
    s = RunSummary.read(run / SUMMARY_FILE)
    if s.multilabel:
        return _multilabel_report(run, s, title)
    metrics = TestMetrics.read(run / TEST_METRICS_FILE).model_dump()
    doc = _Doc(run, f"geotune run {title or run.name}")
    doc.para(
        f"{s.strategy} on {s.backbone} ({s.weights}); {s.n_train} training, "
        f"{s.n_val} validation and {s.n_test} test chips."
    )
    doc.table(
        ["metric", "value"],
        [
            ["overall accuracy (OA) %", _pct(metrics["overall_accuracy"])],
            ["average accuracy (AA) %", _pct(metrics["average_accuracy"])],
            ["macro F1 %", _pct(metrics["macro_f1"])],
            ["Cohen's kappa", f"{metrics['kappa']:.4f}"],
            ["test-time augmentation", metrics.get("tta", "none")],
            [
                "trainable / total parameters",
                f"{s.trainable_params:,} / {s.total_params:,}",
            ],
            ["peak memory MB", f"{s.peak_memory_mb or 0:.0f}"],
        ],
    )
    history = _read_csv(run / "metrics.csv")
    if history:
        doc.h2("Learning curves")
        doc.figure(_learning_figure({s.strategy: history}), "learning curves")
    doc.h2("Confusion matrix")
    doc.figure(_confusion_figure(metrics), "confusion matrix")
    if metrics.get("calibration"):
        from geotune.report.reliability import reliability_figure

        doc.h2("Calibration")
        c = metrics["calibration"]
        doc.para(
            f"Temperature {c['temperature']:.3f} fitted on {c['n_val']} validation chips; test "
            f"ECE {_pct(c['test_ece_before'])}% -> {_pct(c['test_ece_after'])}%, Brier "
            f"{c['test_brier_before']:.4f} -> {c['test_brier_after']:.4f}."
        )
        doc.figure(reliability_figure(c, metrics.get("ece")), "reliability diagram")
    doc.h2("Most confused class pairs")
    _confused_pairs(doc, run)
    return doc.write()


def _multilabel_report(run: Path, s: RunSummary, title: str | None) -> Path:
    """A multi-label run's report: the summary figures, the per-label table, learning curves.
    (The confusion matrix, calibration and confused pairs are single-label figures.)"""
    metrics = json.loads((run / TEST_METRICS_FILE).read_text())
    doc = _Doc(run, f"geotune run {title or run.name}")
    doc.para(
        f"{s.strategy} on {s.backbone} ({s.weights}), multi-label; {s.n_train} training, "
        f"{s.n_val} validation and {s.n_test} test chips. Thresholds: "
        f"{metrics.get('thresholds_chosen', '0.5')}."
    )
    figures = [("map_macro", "mAP macro %"), ("map_micro", "mAP micro %"),
               ("f1_micro", "F1 micro %"), ("f1_macro", "F1 macro %"),
               ("f1_samples", "F1 samples %"), ("subset_accuracy", "subset accuracy %")]  # fmt: skip
    rows = [[name, "-" if metrics[k] is None else _pct(metrics[k])] for k, name in figures]
    rows.append(["Hamming loss", f"{metrics['hamming_loss']:.4f}"])
    rows.append(["label prevalence (chance mAP) %", _pct(metrics["label_prevalence"])])
    doc.table(["metric", "value"], rows)
    doc.h2("Per label")
    doc.table(
        ["label", "test positives", "AP %", "precision %", "recall %", "F1 %", "threshold"],
        [
            [c, v["n_positive"], "-" if v["ap"] is None else _pct(v["ap"]), _pct(v["precision"]),
             _pct(v["recall"]), _pct(v["f1"]), f"{v['threshold']:.3f}"]
            for c, v in metrics["per_label"].items()
        ],
    )  # fmt: skip
    history = _read_csv(run / "metrics.csv")
    if history:
        doc.h2("Learning curves")
        doc.figure(_learning_figure({s.strategy: history}), "learning curves")
    return doc.write()


def sweep_report(sweep: Path) -> Path:
    sweep = Path(sweep)
    results = json.loads((sweep / "results.json").read_text())
    table, cells = results["strategies"], results["cells"]
    doc = _Doc(sweep, f"geotune compare: {sweep.name}")
    doc.h2("Recommendation")
    for line in results["recommendation"]:
        doc.para(line, "rec")
    doc.h2("Strategies, measured")
    m = metric_name(table)
    doc.para(
        ("Overall accuracy" if m == "OA" else "Macro mAP (multi-label chips)")
        + ": mean over seeds with its 95% t-interval; overfitting gap: training minus test "
        "accuracy."
        + (
            " With fewer than 3 seeds no interval is given: it would span nearly everything and "
            "could not separate strategies."
            if min(t["seeds"] for t in table) < 3
            else ""
        )
    )
    _strategy_table(doc, table, m)
    doc.h2("Data efficiency")
    doc.figure(_efficiency_figure(table, m), f"{m} versus labels per class")
    if results.get("backbones"):
        _pretraining_table(doc, results["backbones"], m)
    if results["paired"]:
        _paired_table(doc, results["paired"])
    top_budget = table[-1]["labels_per_class"]
    curves = {
        c["strategy"]: _read_csv(Path(c["run"]) / "metrics.csv")
        for c in cells
        if c["labels_per_class"] == top_budget and c["seed"] == 0
    }
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        doc.h2(f"Learning curves ({top_budget} labels per class, seed 0)")
        doc.figure(_learning_figure(curves), "learning curves")
    best = max(cells, key=lambda c: c["score"])
    best_run = Path(best["run"])
    doc.h2(f"Best run: {best_run.name}")
    if m != "OA":  # multi-label: no confusion matrix; the run's own report has its labels
        doc.para(f"Per-label AP, thresholds and PR curves: {best_run / 'report.html'}")
        return doc.write()
    doc.figure(
        _confusion_figure(TestMetrics.read(best_run / TEST_METRICS_FILE).model_dump()),
        "confusion matrix",
    )
    doc.h2("Most confused class pairs (best run)")
    _confused_pairs(doc, best_run)
    return doc.write()


def _strategy_table(doc: _Doc, table: list[dict], m: str) -> None:
    doc.table(
        [
            "strategy",
            "labels / class",
            "training chips",
            f"{m} %",
            "95% CI",
            "macro F1 %",
            "kappa",
            "trainable params",
            "train time s",
            "peak memory MB",
            "overfitting gap pt",
        ],
        [
            [
                t["strategy"],
                t["labels_per_class"],
                t["n_train"],
                _pct(t["score_mean"]),
                _interval(t["score_ci_low"], t["score_ci_high"]),
                _pct(t["macro_f1_mean"]),
                "-" if t["kappa_mean"] is None else f"{t['kappa_mean']:.3f}",
                f"{t['trainable_params']:,}",
                f"{t['train_time_s_mean']:.0f}",
                f"{t['peak_memory_mb_mean']:.0f}",
                _pct(t["overfitting_gap_mean"]),
            ]
            for t in table
        ],
    )


def _pretraining_table(doc: _Doc, ranking: list[dict], m: str) -> None:
    doc.h2("Pretrainings, ranked (same splits and seeds)")
    doc.para(
        f"Per strategy and label budget, pretrainings by mean {m}; the difference to "
        "the best one is paired over seeds (same training and test chips), with its 95% t-interval."
    )
    doc.table(
        [
            "strategy",
            "labels / class",
            "rank",
            "pretraining",
            f"{m} %",
            "95% CI",
            "vs best (pt)",
            "95% CI of difference",
            "p (paired t)",
            "train time s",
        ],
        [
            [
                r["transfer_strategy"],
                r["labels_per_class"],
                r["rank"],
                r["pretraining"],
                _pct(r["score_mean"]),
                _interval(r["score_ci_low"], r["score_ci_high"]),
                "best" if r["diff_to_best"] is None else f"{100 * r['diff_to_best']:+.1f}",
                ""
                if r["diff_ci_low"] is None or math.isnan(r["diff_ci_low"])
                else f"[{100 * r['diff_ci_low']:+.1f}, {100 * r['diff_ci_high']:+.1f}]",
                "" if r["p_value"] is None or math.isnan(r["p_value"]) else f"{r['p_value']:.3g}",
                f"{r['train_time_s_mean']:.0f}",
            ]
            for r in ranking
        ],
    )


def _paired_table(doc: _Doc, paired: list[dict]) -> None:
    doc.h2("Paired comparisons (same splits)")
    doc.table(
        ["labels / class", "A", "B", "A - B (pt)", "95% CI", "p (paired t)"],
        [
            [
                p["labels_per_class"],
                p["a"],
                p["b"],
                f"{100 * p['diff_mean']:+.1f}",
                f"[{100 * p['diff_ci_low']:+.1f}, {100 * p['diff_ci_high']:+.1f}]"
                if not math.isnan(p["diff_ci_low"])
                else "n/a",
                "n/a" if math.isnan(p["p_value"]) else f"{p['p_value']:.3g}",
            ]
            for p in paired
        ],
    )


def _efficiency_figure(table: list[dict], m: str = "OA"):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    budgets = list(dict.fromkeys(t["labels_per_class"] for t in table))
    xs = {b: i for i, b in enumerate(budgets)}
    for s in dict.fromkeys(t["strategy"] for t in table):
        rows = [t for t in table if t["strategy"] == s]
        x = [xs[t["labels_per_class"]] for t in rows]
        y = np.array([100 * t["score_mean"] for t in rows])
        line = ax.plot(x, y, marker="o", label=s)
        lo = np.array([100 * t["score_ci_low"] for t in rows], dtype=float)
        hi = np.array([100 * t["score_ci_high"] for t in rows], dtype=float)
        if not np.isnan(lo).all():
            ax.fill_between(x, lo, hi, alpha=0.2, color=line[0].get_color())
    ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    ax.set_xlabel("labels per class")
    ax.set_ylabel(f"{'overall accuracy' if m == 'OA' else 'macro mAP'} % (mean, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("data efficiency")
    return fig


def write_report(folder: Path) -> Path:
    """(Re)write report.html and report.md for a compare sweep or a single run.

    Args:
        folder: a sweep folder (results.json) or a run folder (test_metrics.json).

    Returns:
        The path of report.html.
    """

    folder = Path(folder)
    if (folder / "results.json").is_file():
        return sweep_report(folder)
    if (folder / TEST_METRICS_FILE).is_file():
        return run_report(folder)
    if not folder.exists() and staging_of(folder).is_dir():
        raise ConfigError(unfinished_message(folder))
    raise ConfigError(
        f"{folder} is neither a run folder nor a compare sweep; pass one written by geotune"
    )
