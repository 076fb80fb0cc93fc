"""--time-budget: a ladder of real runs on one split, kept on validation, within the budget."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import stub_args

from geotune.config import make_config
from geotune.engine import train
from geotune.errors import ConfigError
from geotune.validation import parse_duration


def test_durations_and_what_a_budget_refuses(aid_tiny, tmp_path):
    assert [parse_duration(t) for t in ("90s", "10m", "1.5h", " 45s ")] == [90, 600, 5400, 45]
    for bad in ("10", "ten minutes", "5s", "-3m", True, 600):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ConfigError, match="bad value for 'time_budget': give a duration"):
        make_config(data=aid_tiny, time_budget="10")
    with pytest.raises(ConfigError, match="time_budget"):
        make_config(data=aid_tiny, time_budget=600)  # strict: a number is not a duration
    with pytest.raises(ConfigError, match="--time-budget chooses strategy; leave it out"):
        train(make_config(**stub_args(aid_tiny, tmp_path, time_budget="1m", strategy="full")))
    with pytest.raises(ConfigError, match="max_time stops one process"):
        make_config(data=aid_tiny, max_time=60, devices=2)
    assert not any(tmp_path.iterdir())  # refused before any work


@pytest.mark.slow
def test_max_time_stops_training_and_tests_the_best_epoch(aid_tiny, tmp_path):
    t0 = time.monotonic()
    result = train(make_config(**stub_args(aid_tiny, tmp_path, epochs=200, max_time=4)))
    assert time.monotonic() - t0 < 60
    assert result.summary["stopped_early"] and len(result.history) < 200
    spent = sum(r["epoch_time_s"] for r in result.history)
    assert spent <= 4 + max(r["epoch_time_s"] for r in result.history)
    assert result.test_metrics["overall_accuracy"] is not None


@pytest.mark.slow
def test_epochs_by_time_fills_max_time_and_anneals_the_rate(aid_tiny, tmp_path):
    # lp-ft on the stub backbone: one head epoch, then as many as end within 12 s of the start.
    limit = 12.0
    args = stub_args(aid_tiny, tmp_path, strategy="lp-ft", head_epochs=1, epochs=400,
                     max_time=limit, epochs_by_time=True)  # fmt: skip
    t0 = time.monotonic()
    result = train(make_config(**args))
    wall = time.monotonic() - t0
    history = result.history
    epoch = max(r["epoch_time_s"] for r in history)
    # Filled, not stopped at a planned count: it ran until about the limit, and no further.
    assert 2 < len(history) < 400
    assert limit - 3 * epoch - 2 <= wall <= limit + 3 * epoch + 2
    # The schedule was fitted to the epochs run: the last epoch's rate is near the end of the
    # cosine (an unfitted 399-epoch schedule would still be near its peak).
    fine = [r for r in history if r["phase"] != "head"]
    assert fine[-1]["lr"] < 0.1 * max(r["lr"] for r in fine)
    assert not result.summary["stopped_early"] or result.summary.get("stopped_by") != "patience"


def test_a_schedule_resized_mid_run_ends_at_its_minimum():
    import torch

    from geotune.config import make_config as mk
    from geotune.transfer.optim import build_scheduler, resize_schedule

    for warmup in (0.0, 1.0):
        cfg = mk(data=".", warmup_epochs=warmup, epochs=100)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = build_scheduler(opt, cfg, steps_per_epoch=10, epochs=100)
        lrs = []
        for step in range(60):
            if step == 20:  # after two epochs: 6 epochs in all instead of 100
                resize_schedule(sched, cfg, 10, 6)
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        assert lrs[-1] < 1e-3, warmup  # annealed at the new end
        assert max(lrs[20:]) <= max(lrs[:21]) + 1e-9  # no jump up when resized
        assert all(b <= a + 1e-9 for a, b in zip(lrs[21:], lrs[22:], strict=False)), (
            warmup
        )  # smooth decay


def summary_n_val(result) -> int:
    return json.loads((result.run_dir / "summary.json").read_text())["n_val"]


def test_the_kept_recipe_is_the_earliest_within_one_standard_error():
    from geotune.engine.budget import Candidate, one_standard_error_choice

    ran = [Candidate("default", {}, val_accuracy=0.85), Candidate("b", {}, val_accuracy=0.86)]
    # 400 validation chips: SE ~1.7 points, so one point better is noise and the default stays.
    assert one_standard_error_choice(ran, 400).name == "default"
    # 10,000 validation chips: SE ~0.35 points, so one point better wins.
    assert one_standard_error_choice(ran, 10_000).name == "b"
    ran.append(Candidate("lp-ft", {}, val_accuracy=0.92))
    assert one_standard_error_choice(ran, 400).name == "lp-ft"


def test_a_probe_averaged_over_views_is_preferred_to_its_plain_probe():
    # RSSCN7 at 2m (56 validation chips): the plain probe 82.1%, rot2 and MobileNetV2 85.7%.
    # All three lie within one standard error; the rot2 probe is kept, not the plain one.
    from geotune.engine.budget import Candidate, one_standard_error_choice, preference_order

    probe = {"strategy": "linear-probe", "backbone": "a"}
    ran = [
        Candidate("probe-a", probe, val_accuracy=0.821),
        Candidate("probe-a-rot2", {**probe, "tta": "rot2"}, val_accuracy=0.857),
        Candidate("probe-b", {**probe, "backbone": "b"}, val_accuracy=0.857),
    ]
    assert [c.name for c in preference_order(ran)] == ["probe-a-rot2", "probe-a", "probe-b"]
    assert one_standard_error_choice(preference_order(ran), 56).name == "probe-a-rot2"
    # A views run of another backbone does not jump ahead of the default's plain probe.
    other = Candidate("probe-b-rot2", {**probe, "backbone": "b", "tta": "rot2"}, val_accuracy=0.8)
    assert [c.name for c in preference_order([ran[0], ran[2], other])] == [
        "probe-a",
        "probe-b-rot2",
        "probe-b",
    ]


@pytest.mark.slow
def test_a_budgeted_run_keeps_the_best_on_validation_within_the_budget(aid_tiny, tmp_path):
    budget = 45
    t0 = time.monotonic()
    result = train(make_config(**stub_args(aid_tiny, tmp_path, epochs=6, time_budget="45s")))
    wall = time.monotonic() - t0
    assert wall <= 1.1 * budget
    record = json.loads((result.run_dir / "budget.json").read_text())
    ran = [c for c in record["candidates"] if c["seconds"] is not None]
    assert len(ran) >= 2 and {c["name"] for c in record["candidates"]} >= {
        "probe-test-efficientnet"
    }
    kept = next(c for c in record["candidates"] if c["status"] == "kept")
    # Chosen on validation: the first in order of preference within one standard error of the
    # best (a views probe counts before its plain probe).
    best = max(c["val_accuracy"] for c in ran)
    se = (best * (1 - best) / summary_n_val(result)) ** 0.5
    from geotune.engine.budget import Candidate, preference_order

    order = [c.name for c in preference_order([Candidate(c["name"], c["recipe"]) for c in ran])]
    ran = sorted(ran, key=lambda c: order.index(c["name"]))
    assert kept == next(c for c in ran if c["val_accuracy"] >= best - se) | {"status": "kept"}
    assert record["spent_s"] <= 1.1 * budget
    # An ordinary run folder, and nothing else left in the output folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == [result.run_dir.name]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["time_budget"]["kept"] == kept["name"]
    assert (result.run_dir / "checkpoints" / "best.pt").is_file()
    config = (result.run_dir / "config.yaml").read_text()
    assert f"name: {result.run_dir.name}" in config and "time_budget: null" in config


@pytest.mark.slow
def test_compare_runs_the_time_budget_beside_the_strategies(aid_tiny, tmp_path):
    from geotune.sweep import make_compare_config, run_compare

    train_opts = {k: v for k, v in stub_args(aid_tiny, tmp_path).items()
                  if k not in ("data", "output", "train_fraction", "epochs")}  # fmt: skip
    values = dict(data=aid_tiny, strategies="linear-probe", labels_per_class="all", seeds=1,
                  pool_fraction=0.5, output=tmp_path / "sweeps", name="b", train=train_opts)  # fmt: skip
    sweep = run_compare(make_compare_config(time_budget="30s", **values))
    rows = json.loads((sweep / "results.json").read_text())["cells"]
    assert [r["strategy"] for r in rows] == ["linear-probe", "time-budget-30s"]
    budget = rows[1]
    record = json.loads((Path(budget["run"]) / "budget.json").read_text())
    kept = next(c for c in record["candidates"] if c["status"] == "kept")
    assert budget["transfer_strategy"] == kept["recipe"].get("strategy", "linear-probe")
    assert budget["train_time_s"] == record["spent_s"] <= 1.1 * 30
    # The same split: the budget's run read the cell's split file.
    split = (sweep / "splits" / "all-s0.csv").read_text().splitlines()
    assert set((Path(budget["run"]) / "split.csv").read_text().splitlines()) <= set(split)
    again = run_compare(make_compare_config(time_budget="30s", **values))  # reused, not rerun
    assert json.loads((again / "results.json").read_text())["cells"] == rows
    with pytest.raises(ConfigError, match="chooses the backbone itself"):
        plain = {**values, "train": {}}
        make_compare_config(
            time_budget="30s", backbones="tf_efficientnet_lite0,mobilenetv2_100", **plain
        )


_IMPORTED = time.monotonic()


def test_a_command_s_budget_counts_from_its_process_start():
    """The interpreter's start and the imports are the user's seconds too: the clock the CLI
    gives the budget started before this module was imported, and not before the machine."""
    from geotune.runs.metering import command_started

    age = time.monotonic() - command_started()
    assert time.monotonic() - _IMPORTED <= age < 7 * 24 * 3600
