"""`geotune compare` and reports: results table, statistics, resumption, recommendation, HTML."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO

from geotune.errors import ConfigError
from geotune.sweep import make_compare_config, recommend, run_compare

TRAIN = {"image_size": 64, "batch_size": 8, "epochs": 1}


@pytest.fixture(scope="module")
def sweep(aid_small, tmp_path_factory) -> Path:
    # Probing strategies train no network: a full grid in seconds, on real features.
    config = make_compare_config(
        data=aid_small,
        strategies="linear-probe,knn",
        labels_per_class="2,all",
        seeds=2,
        pool_fraction=0.5,
        output=tmp_path_factory.mktemp("sweeps"),
        name="grid",
        train=TRAIN,
    )
    return run_compare(config)


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_grid_results_table(sweep):
    rows = _csv(sweep / "results.csv")
    assert len(rows) == 2 * 2 * 2
    assert {(r["strategy"], r["labels_per_class"], r["seed"]) for r in rows} == {
        (s, b, str(k)) for s in ("linear-probe", "knn") for b in ("2", "all") for k in (0, 1)
    }
    for r in rows:
        assert float(r["score_ci_low"]) <= float(r["overall_accuracy"]) <= float(r["score_ci_high"])
    # One test set per seed, whatever the budget: strategies are compared on the same chips.
    tests = {}
    for r in rows:
        split = _csv(Path(r["run"]) / "split.csv")
        tests.setdefault(r["seed"], set()).add(
            frozenset(s["path"] for s in split if s["split"] == "test")
        )
    assert all(len(v) == 1 for v in tests.values())


def test_report_numbers_match_the_results(sweep):
    summary = _csv(sweep / "summary.csv")
    md = (sweep / "report.md").read_text()
    for t in summary:
        oa = f"{100 * float(t['score_mean']):.1f}"
        assert re.search(rf"\| {t['strategy']} \| {t['labels_per_class']} \| \d+ \| {oa} \|", md), (
            t,
            md,
        )
    results = json.loads((sweep / "results.json").read_text())
    for line in results["recommendation"]:
        assert line in md


def test_interrupted_compare_continues(sweep, tmp_path):
    copy = tmp_path / "grid"
    shutil.copytree(sweep, copy)
    done = {p.name: (p / "test_metrics.json").stat().st_mtime_ns for p in (copy / "runs").iterdir()}
    shutil.rmtree(copy / "runs" / "knn-all-s1")  # as if killed before this cell finished
    cfg = make_compare_config(
        data=_data(copy),
        strategies="linear-probe,knn",
        labels_per_class="2,all",
        seeds=2,
        pool_fraction=0.5,
        output=tmp_path,
        name="grid",
        train=TRAIN,
    )
    run_compare(cfg)
    after = {
        p.name: (p / "test_metrics.json").stat().st_mtime_ns for p in (copy / "runs").iterdir()
    }
    assert set(after) == set(done)
    assert all(after[k] == v for k, v in done.items() if k != "knn-all-s1")


def _data(sweep: Path) -> str:
    import yaml

    return yaml.safe_load((sweep / "compare.yaml").read_text())["data"]


def _table(strategy_oas: dict[str, tuple[float, float]]) -> tuple[list[dict], list[dict]]:
    table = [
        {
            "strategy": s,
            "labels_per_class": 5,
            "score_mean": oa,
            "train_time_s_mean": t,
            "n_train": 150,
        }
        for s, (oa, t) in strategy_oas.items()
    ]
    return table, []


def test_recommendation_follows_the_numbers():
    table, pairs = _table({"linear-probe": (0.80, 10.0), "lp-ft": (0.90, 500.0)})
    pairs = [
        {
            "labels_per_class": 5,
            "a": "lp-ft",
            "b": "linear-probe",
            "diff_mean": 0.10,
            "diff_ci_low": 0.05,
            "diff_ci_high": 0.15,
            "p_value": 0.01,
            "seeds": 3,
        }
    ]
    (line,) = recommend(table, pairs)
    assert "use lp-ft" in line and "significantly above linear-probe" in line
    # Same strategies, but the fine-tune's advantage is within noise: the cheaper probe wins.
    pairs[0].update(diff_mean=0.01, diff_ci_low=-0.02, diff_ci_high=0.04)
    table[1]["score_mean"] = 0.81
    (line,) = recommend(table, pairs)
    assert "use linear-probe" in line and "not significantly below lp-ft" in line
    # And when the probe is simply better, it is recommended on accuracy alone.
    table, _ = _table({"linear-probe": (0.92, 10.0), "lp-ft": (0.85, 500.0)})
    (line,) = recommend(table, [])
    assert "use linear-probe" in line and "highest" not in line


def test_reports_cite_what_auto_would_choose(sweep):
    from geotune.sweep.recommendation import auto_lines

    results = json.loads((sweep / "results.json").read_text())
    # 2 labels per class is far below the rule's threshold: auto would probe.
    (two,) = [line for line in results["recommendation"] if line.startswith("With 2 labels")
              and "auto would choose" in line]  # fmt: skip
    assert "--strategy auto would choose linear-probe" in two
    # Enough labels: the probe's validation accuracy decides, and the report says if it agrees.
    table, _ = _table({"linear-probe": (0.80, 10.0), "lp-ft": (0.90, 500.0)})
    rows = [
        {"strategy": s, "transfer_strategy": s, "labels_per_class": 5, "n_train": 150,
         "n_classes": 3, "probe_val_accuracy": acc if s == "linear-probe" else None}
        for s in ("linear-probe", "lp-ft") for acc in (0.80,)
    ]  # fmt: skip
    (line,) = auto_lines(rows, table)
    assert "would choose lp-ft" in line and "80.0% on validation" in line and "agrees" in line
    rows[0]["probe_val_accuracy"] = 0.99
    (line,) = auto_lines(rows, table)
    assert "would choose linear-probe" in line and "differs from" in line


def test_bad_compare_options():
    with pytest.raises(ConfigError, match="label budgets are positive integers or 'all'"):
        make_compare_config(data=".", labels_per_class="5,many")
    with pytest.raises(ConfigError, match="unknown config key 'epoch'"):
        make_compare_config(data=".", train={"epoch": 3})


def test_report_renders_in_headless_chromium(sweep):
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/test.sh installs Debian's chromium package")
        pytest.skip("chromium not installed (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((sweep / "report.html").as_uri())
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.complete, e.naturalWidth])"
        )
        rows = page.eval_on_selector_all("table tr", "els => els.length")
        page.screenshot(path=str(artifacts / "compare-report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert len(images) >= 2 and all(done and width > 0 for done, width in images)
    assert rows > 4


def test_small_budgets_get_enough_steps(aid_small):
    from geotune.sweep import cell_epochs

    config = make_compare_config(
        data=aid_small, min_steps=40, train={"batch_size": 8, "epochs": 3, "head_epochs": 1}
    )
    assert cell_epochs(config, "feature-extraction", 16) == 20  # 2 steps per epoch
    assert cell_epochs(config, "lp-ft", 16) == 21  # plus the head-only epoch
    assert cell_epochs(config, "feature-extraction", 800) == 3  # already 300 steps
    assert cell_epochs(config, "linear-probe", 16) is None


def _seed_rows(accuracy: dict[str, list[float]], seconds: dict[str, float]) -> list[dict]:
    """compare's per-run rows: one per strategy and seed, at one label budget."""
    return [
        {"strategy": s, "transfer_strategy": s, "labels_per_class": 20, "seed": i,
         "metric": "overall_accuracy", "score": oa, "overfitting_gap": None, "macro_f1": oa, "kappa": oa,
         "trainable_params": 1, "train_time_s": seconds[s], "peak_memory_mb": None,
         "n_train": 350, "n_classes": 7, "probe_val_accuracy": None}
        for s, oas in accuracy.items() for i, oa in enumerate(oas)
    ]  # fmt: skip


def test_a_cheaper_strategy_must_save_material_time():
    from geotune.sweep.statistics import summarize

    # The RSSCN7 case: 3.8 points less, not significant over 3 seeds, to save about 1 second.
    acc = {"linear-probe": [0.80, 0.74, 0.773], "feature-extraction": [0.70, 0.76, 0.739]}
    table, pairs = summarize(_seed_rows(acc, {"linear-probe": 3.3, "feature-extraction": 2.3}))
    assert pairs[0]["diff_ci_low"] < 0 < pairs[0]["diff_ci_high"]  # within noise
    lines = recommend(table, pairs)
    assert len(lines) == 1 and "use linear-probe" in lines[0]
    assert "would save only 1 s (0.7x the training time)" in lines[0]
    # The same accuracies with a fit that takes minutes: the saving is material, and stated.
    table, pairs = summarize(_seed_rows(acc, {"linear-probe": 330.0, "feature-extraction": 30.0}))
    (line,) = recommend(table, pairs)
    assert "use feature-extraction" in line and "300 s faster to train (0.091x" in line


def test_fewer_than_three_seeds_cannot_separate_strategies(tmp_path):
    from geotune.sweep.statistics import summarize

    acc = {"linear-probe": [0.80, 0.74], "feature-extraction": [0.70, 0.76]}
    table, pairs = summarize(_seed_rows(acc, {"linear-probe": 300.0, "feature-extraction": 3.0}))
    assert all(math.isnan(t["score_ci_low"]) for t in table)  # not [0, 100]
    assert math.isnan(pairs[0]["diff_ci_low"]) and math.isnan(pairs[0]["p_value"])
    first, line = recommend(table, pairs)
    assert first.startswith("With 2 seeds per strategy the 95% intervals cannot separate")
    # By mean alone, and never "not significantly below" on an untested difference.
    assert "use linear-probe" in line and "not tested (fewer than 3 paired seeds)" in line
    assert "significantly" not in line


def test_auto_line_never_contradicts_the_recommendation_silently():
    from geotune.sweep.recommendation import auto_lines
    from geotune.sweep.statistics import summarize

    acc = {"linear-probe": [0.80, 0.74, 0.773], "lp-ft": [0.83, 0.73, 0.78]}
    rows = _seed_rows(acc, {"linear-probe": 20.0, "lp-ft": 400.0})
    for r in rows:
        r["probe_val_accuracy"] = 0.5  # far from the pretraining: the rule fine-tunes
    table, pairs = summarize(rows)
    (rec,) = recommend(table, pairs)
    assert "use linear-probe" in rec  # as accurate within noise, 380 s faster
    (line,) = auto_lines(rows, table, pairs)
    assert "would choose lp-ft" in line
    assert "agrees with the highest measured accuracy here (lp-ft" in line
    assert "the recommendation above prefers linear-probe because" in line
