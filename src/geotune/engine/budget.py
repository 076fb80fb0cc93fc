"""``--time-budget``: the recipe expected to be most accurate within a wall-clock budget.

No anchor library has this, so it is written here. The plan is a ladder of candidates, each an
ordinary ``train`` run on one shared split:

1. the linear probe on the default backbone, then the same probe with features averaged over two
   views (``rot2``: the README's main job); on multispectral chips instead the probe on true
   and false-colour composites (the stem untouched), beside the default band handling;
2. if the budget left affords ``lp-ft`` fine-tuning for at least ``FT_MIN_EPOCHS`` epochs, all of
   it goes to lp-ft of that backbone: with a few hundred labelled chips fine-tuning beats frozen
   features by several points (AID 93.5 vs 89.1, BENCHMARKS.md), far more than the choice among
   frozen backbones (within ~2 points of each other there). lp-ft's epoch count comes from its
   own epochs' measured time (``--epochs-by-time``), so it ends at the budget with its learning
   rate annealed, whatever the cost model's error;
3. otherwise the other installed backbones (cheapest first), the probe on an ensemble of the two
   best, and ``rot2`` on the best, then lp-ft with what is left;
4. what lp-ft leaves (it reached its epoch cap, or did not fit) goes to the steps not yet tried:
   the other backbones, then lp-ft of the best of them.

Before each step the cost is estimated from a cost model measured on this machine (a few timed
batches of each backbone: decoding, forward passes, training steps), corrected by how far the
last estimate was off; a step that would not fit in what is left of the budget is skipped. The
run kept is chosen on **validation** accuracy with the one-standard-error rule: the earliest
(simplest) candidate within one binomial standard error of the best, so a few validation chips'
luck does not swap the default for a backbone that merely drew an easy validation set (the
probe averaged over views counts as before its plain probe: ``preference_order``). Test
accuracy never enters. The result is an ordinary run folder, with ``budget.json`` (every
candidate: recipe, estimated and actual seconds, validation accuracy, why kept or skipped) and a
``time_budget`` entry in ``summary.json``.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from geotune.config import TrainConfig, flatten_sections, make_config, save_config
from geotune.data.decode import read_chip
from geotune.data.splits import write_split
from geotune.engine.prepare import Prepared, RunResult, prepare
from geotune.errors import ConfigError
from geotune.fileio import atomic_write_json
from geotune.models.classifier import build_classifier
from geotune.models.offline import offline_names
from geotune.runs.rundir import new_run
from geotune.validation import parse_duration

# Plan each step to this share of what is left: estimates come from a few timed batches.
SAFETY = 0.75
MIN_STEP_S = 10.0  # with less left, no new candidate is timed or run
TIMED_CHIPS = 16  # per timed batch: enough to amortise Python overhead on a CPU
# lp-ft gets the rest of the budget when it affords this many epochs (one head epoch, then the
# network): fewer rarely move a pretrained backbone past its own frozen features.
FT_MIN_EPOCHS = 4
# lp-ft's epochs come from its measured epoch time; this caps them when --epochs is not given
# (enough to converge from a trained head on a few thousand chips; the best epoch is kept).
BUDGET_EPOCHS = 50
LEFTOVER = 0.1  # a share of the budget left after lp-ft that is worth more candidates
RESERVE_S, RESERVE_SHARE = 3.0, 0.02
PROBE = {"strategy": "linear-probe"}
# Options the budget chooses; given with it they would be silently overridden, so refused.
CHOSEN = ("strategy", "tta", "head_epochs")


@dataclass
class Candidate:
    """One rung of the ladder: a recipe (config updates) and what it cost and scored."""

    name: str
    recipe: dict[str, Any]
    estimate_s: float = 0.0
    seconds: float | None = None
    val_accuracy: float | None = None
    test_overall_accuracy: float | None = None  # recorded, never used to choose
    status: str = "planned"
    result: RunResult | None = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "result"}


@dataclass
class Costs:
    """Seconds per chip of one backbone on this machine, at its input size."""

    decode: float
    forward: float
    train_step: float
    size: int


@dataclass
class Ladder:
    config: TrainConfig
    console: Console
    deadline: float
    n: dict[str, int]
    tried: list[Candidate] = field(default_factory=list)
    correction: float = 1.0  # actual / estimated seconds of the last run
    start: float = 0.0

    def left(self) -> float:
        return self.deadline - time.monotonic()


def check_budget_config(config: TrainConfig) -> None:
    """Refuse what a budgeted run cannot honour, before any work."""
    given = sorted(k for k in CHOSEN if k in config.model_fields_set)
    if given:
        raise ConfigError(
            f"--time-budget chooses {', '.join(given)}; leave {'it' if len(given) == 1 else 'them'}"
            " out, or leave out --time-budget"
        )
    if config.devices > 1:
        raise ConfigError("--time-budget runs on one device; leave out --devices or the budget")
    from geotune.data.bigearthnet import is_bigearthnet
    from geotune.data.index import multilabel_index

    if config.labels is not None or is_bigearthnet(config.data) or multilabel_index(config.data):
        raise ConfigError(
            "--time-budget does not choose for multi-label chips (--labels, BigEarthNet, a "
            "multi-label index file) yet; "
            "name a strategy"
        )
    if config.val_fraction <= 0:
        raise ConfigError("--time-budget chooses on validation chips; give --val-fraction > 0")


def train_within_budget(
    config: TrainConfig,
    run_one: Callable[[TrainConfig], RunResult],
    console: Console | None = None,
    started: float | None = None,
) -> RunResult:
    """Try the ladder's candidates within ``config.time_budget``; keep the best on validation.

    ``run_one`` is ``geotune.engine.trainer.train`` (passed in: it calls this module).
    ``started``: when the budget's clock started (``time.monotonic()``; default now).
    """
    console = console or Console(stderr=True)
    start = time.monotonic() if started is None else started
    budget = parse_duration(config.time_budget)
    check_budget_config(config)
    final = new_run(config)
    final.check_available()
    final.lock()  # the name is this run's for the whole budget
    trials = final.final.parent / f".{final.final.name}.budget"
    try:
        return _run_ladder(config, run_one, console, start, budget, final, trials)
    finally:
        shutil.rmtree(trials, ignore_errors=True)
        final.unlock()


def _run_ladder(config, run_one, console, start, budget, final, trials) -> RunResult:
    base = config.model_copy(update={"time_budget": None, "strategy": "linear-probe"})
    prep = prepare(base, console)  # decode at the first backbone's size; the split for all
    trials.mkdir(parents=True, exist_ok=True)
    split_file = trials / "split.csv"
    write_split(split_file, prep.images.folder, prep.split)
    n = {part: len(prep.indices(part)) for part in ("train", "val", "test")} | {
        "all": len(prep.split)
    }
    ladder = Ladder(config, console, start + budget, n, start=start)
    backbones = _backbones(config, prep)

    @functools.cache
    def cost(b: str) -> Costs:  # timed when first needed: a skipped backbone costs nothing
        return measure_costs(b, config, prep)

    console.log(
        f"time budget {budget:.0f}s: data ready after {time.monotonic() - start:.0f}s; "
        f"{len(backbones)} backbone(s), cheapest recipes first"
    )
    common = {"split": split_file, "output": trials, "time_budget": None}

    def attempt(
        name: str, recipe: dict, estimate: Callable[[], float], fills: bool = False
    ) -> Candidate:
        # ``fills``: the run fits itself to the time left (lp-ft with --epochs-by-time).
        c = Candidate(name, recipe)
        ladder.tried.append(c)
        if len(ladder.tried) > 1 and ladder.left() < MIN_STEP_S:
            c.status = f"skipped: {ladder.left():.0f}s left"
            return c
        raw = estimate()
        c.estimate_s = raw * ladder.correction
        if c.estimate_s > SAFETY * ladder.left() and len(ladder.tried) > 1 and not fills:
            c.status = f"skipped: estimated {c.estimate_s:.0f}s, {ladder.left():.0f}s left"
            return c
        t0 = time.monotonic()
        values = {**config.model_dump(exclude_unset=True), **common, **recipe, "name": name}
        result = run_one(make_config(**values))
        c.seconds = time.monotonic() - t0
        # Timed batches of a cold model on a loaded machine can be off several-fold either way.
        ladder.correction = float(np.clip(c.seconds / max(raw, 1e-6), 0.25, 4.0))
        c.val_accuracy = validation_accuracy(result.summary)
        c.test_overall_accuracy = result.test_metrics.get("overall_accuracy")
        c.status, c.result = "ran", result
        return c

    size = prep.preprocessing.size  # chips are decoded at this size already

    def probe_cost(b: str, views: int = 1) -> float:
        return _probe_cost(cost(b), n, views, decoded=cost(b).size == size)

    default = backbones[0]
    attempt(f"probe-{_short(default)}", {**PROBE, "backbone": default}, lambda: probe_cost(default))
    if not _multispectral(prep):
        rot2 = {**PROBE, "backbone": default, "tta": "rot2"}
        # One pass more than the probe: the plain view's features are cached already.
        attempt(f"probe-{_short(default)}-rot2", rot2, lambda: probe_cost(default, views=1))
    elif "band_init" not in config.model_fields_set and (
        n_comp := _composite_views(prep)
    ):  # the stem untouched: true and false colour views
        comp = {**PROBE, "backbone": default, "band_init": "composites"}
        attempt(f"probe-{_short(default)}-composites", comp, lambda: probe_cost(default, n_comp))
    if not _ran(ladder):
        raise ConfigError(
            "--time-budget chooses on validation, and this split has no validation chips; "
            "raise --val-fraction or --train-fraction"
        )
    explored = _affordable_epochs(ladder, cost(default)) < FT_MIN_EPOCHS
    if explored:
        _explore_backbones(attempt, ladder, backbones, cost, probe_cost, prep)
    tuned = _fine_tune(attempt, ladder, _best_single(ladder), cost)
    # lp-ft fills the budget unless it reached its epoch cap or did not fit: use what is left.
    if ladder.left() > max(MIN_STEP_S, LEFTOVER * budget):
        if not explored:
            _explore_backbones(attempt, ladder, backbones, cost, probe_cost, prep)
        best = _best_single(ladder)
        if best not in tuned:
            _fine_tune(attempt, ladder, best, cost)
    return _keep_best(ladder, final, budget)


def _best_single(ladder: Ladder) -> str:
    """The backbone of the best single-backbone run on validation (an ensemble serves probes
    only, so it is never the one fine-tuned)."""
    singles = [c for c in _ran(ladder) if "+" not in c.recipe["backbone"]]
    return max(singles, key=lambda c: c.val_accuracy).recipe["backbone"]


def _ran(ladder: Ladder) -> list[Candidate]:
    """The candidates that ran, in the order tried."""
    return [c for c in ladder.tried if c.val_accuracy is not None]


def _explore_backbones(attempt, ladder: Ladder, backbones, cost, probe_cost, prep) -> None:
    """The other installed backbones (cheapest first), an ensemble of the two best, and rot2
    on the best: for budgets too short to fine-tune."""
    others = sorted(backbones[1:], key=lambda b: probe_cost(b))
    for b in others:
        attempt(f"probe-{_short(b)}", {**PROBE, "backbone": b}, lambda b=b: probe_cost(b))
    # The plain probe of each backbone (not its rot2, composites or lp-ft runs), best first.
    plain = [c for c in _ran(ladder) if c.recipe.keys() == {"strategy", "backbone"}
             and c.recipe["strategy"] == PROBE["strategy"] and "+" not in c.recipe["backbone"]]  # fmt: skip
    singles = sorted(plain, key=lambda c: -c.val_accuracy)
    if len(singles) >= 2 and not _multispectral(prep):
        a, b = (c.recipe["backbone"] for c in singles[:2])
        # Ensemble features are each member's final pooled features, a cache of their own.
        attempt(
            "probe-ensemble",
            {**PROBE, "backbone": f"{a}+{b}"},
            lambda: probe_cost(a) + probe_cost(b),
        )
    best = singles[0].recipe["backbone"] if singles else backbones[0]
    if best != backbones[0] and not _multispectral(prep):
        rot2 = {**PROBE, "backbone": best, "tta": "rot2"}
        attempt(f"probe-{_short(best)}-rot2", rot2, lambda: probe_cost(best, views=1))


def _epoch_costs(ladder: Ladder, cost: Costs) -> tuple[float, float]:
    """Estimated seconds of one lp-ft epoch and of its test pass."""
    n = ladder.n
    per_epoch = n["train"] * cost.train_step + n["val"] * cost.forward
    return per_epoch, n["test"] * cost.forward + 5.0


def _affordable_epochs(ladder: Ladder, cost: Costs) -> int:
    per_epoch, test = _epoch_costs(ladder, cost)
    return int((SAFETY * ladder.left() / ladder.correction - test) // max(per_epoch, 1e-6))


def _fine_tune(attempt, ladder: Ladder, backbone: str, cost) -> set[str]:
    """lp-ft of ``backbone`` filling what is left of the budget: its epochs come from its own
    epochs' measured time (--epochs-by-time), at most ``--epochs`` when given, else
    BUDGET_EPOCHS. Returns the backbones fine-tuned (none when 2 epochs do not fit)."""
    if ladder.left() <= MIN_STEP_S:
        return set()
    per_epoch, test = _epoch_costs(ladder, cost(backbone))
    planned = _affordable_epochs(ladder, cost(backbone))
    name = "lp-ft" if not any(c.name.startswith("lp-ft") for c in ladder.tried) else (
        f"lp-ft-{_short(backbone)}"
    )  # fmt: skip
    if planned < 2:
        c = Candidate(name, {"backbone": backbone, "strategy": "lp-ft"})
        c.estimate_s = (per_epoch * 2 + test) * ladder.correction
        c.status = f"skipped: 2 epochs need ~{c.estimate_s:.0f}s, {ladder.left():.0f}s left"
        ladder.tried.append(c)
        return set()
    cap = ladder.config.epochs if "epochs" in ladder.config.model_fields_set else BUDGET_EPOCHS
    recipe = {
        "backbone": backbone,
        "strategy": "lp-ft",
        "epochs": cap,
        # One head epoch for short runs; two when there is time (the head settles first).
        "head_epochs": 1 if min(planned, cap) < 8 else 2,
        "max_time": max(1.0, ladder.left() - _reserve(ladder)),
        "epochs_by_time": True,
    }
    # Estimated: the cap's epochs, or the time left when that is less (raw seconds: the
    # ladder applies its correction).
    fill = (ladder.left() - _reserve(ladder)) / ladder.correction
    attempt(name, recipe, lambda: min(fill, per_epoch * cap + test), fills=True)
    return {backbone}


def _reserve(ladder: Ladder) -> float:
    """Seconds kept after a run that fills the budget: setting it up (reading the cache,
    building the model) and moving the kept run into place."""
    return RESERVE_S + RESERVE_SHARE * (ladder.deadline - ladder.start)


def _keep_best(ladder: Ladder, final, budget: float) -> RunResult:
    ran = preference_order(_ran(ladder))  # validation accuracy is set once a candidate ran
    kept = one_standard_error_choice(ran, ladder.n["val"])
    kept.status = "kept"
    result = kept.result
    src = result.run_dir
    record = {
        "budget_s": budget,
        "spent_s": None,  # set below, after the move
        "kept": kept.name,
        "why": f"the first of {len(ran)} recipe(s) run, in order of preference, within one "
        f"standard error of the best validation accuracy ({100 * kept.val_accuracy:.2f}%)",
        "rule": "the default probe first; each run only if its estimated cost fits the budget "
        "left; the kept run is the first, in the order tried (a probe averaged over views "
        "before the plain probe it averages), within one binomial standard error of the best "
        "validation accuracy, never chosen on the test split",
        "candidates": [c.record() for c in ladder.tried],
    }
    src.rename(final.final)
    config = make_config(
        **{**result_config(final.final), "name": final.final.name, "output": final.final.parent}
    )
    save_config(config.model_copy(update={"split": None}), final.final / "config.yaml")
    record["spent_s"] = round(time.monotonic() - (ladder.deadline - budget), 1)
    atomic_write_json(final.final / "budget.json", record)
    summary_path = final.final / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["time_budget"] = {k: record[k] for k in ("budget_s", "spent_s", "kept", "why")}
    atomic_write_json(summary_path, summary)
    for c in ladder.tried:
        ladder.console.log(
            f"budget: {c.name:<16} {c.status:<10} est {c.estimate_s:6.0f}s"
            + (f"  ran {c.seconds:6.0f}s  val {100 * c.val_accuracy:.2f}%" if c.seconds else "")
        )
    ladder.console.log(
        f"budget: kept {kept.name} ({record['why']}); {record['spent_s']:.0f}s of {budget:.0f}s"
    )
    return RunResult(final.final, result.test_metrics, result.history, summary)


def preference_order(ran: list[Candidate]) -> list[Candidate]:
    """The order the one-standard-error rule prefers: the order tried, except that a probe
    averaged over views (``rot2``) comes before the plain probe of the same backbone. It is the
    same linear model on the same features, averaged over rotations, so it has no more capacity
    to fit validation by luck, and it gained 2.2-4.0 points over the plain probe on AID and RSSCN7
    (benchmarks/results/2026-11-29-recipes.md). The budget runs the plain probe first only
    because it is cheaper and must fit the shortest budgets."""
    order = list(ran)
    for c in ran:
        if "tta" not in c.recipe or c.recipe.get("strategy") != PROBE["strategy"]:
            continue
        plain = {k: v for k, v in c.recipe.items() if k != "tta"}
        base = next((p for p in order if p.recipe == plain), None)
        if base is not None:
            order.remove(c)
            order.insert(order.index(base), c)
    return order


def one_standard_error_choice(ran: list[Candidate], n_val: int) -> Candidate:
    """The earliest candidate whose validation accuracy is within one binomial standard error
    (sqrt(p (1 - p) / n_val)) of the best: the one-standard-error rule (Breiman et al. 1984),
    so the simpler recipe tried first stays unless another is better beyond validation noise.
    p is smoothed by one chip each way ((k + 1) / (n + 2)): a perfect score on 20 chips is not
    a zero standard error."""
    best = max(c.val_accuracy for c in ran)
    n = max(n_val, 1)
    p = (best * n + 1) / (n + 2)
    se = float(np.sqrt(p * (1 - p) / n))
    return next(c for c in ran if c.val_accuracy >= best - se)


def result_config(run: Path) -> dict:
    """A finished run's options, flat (config.yaml groups them by section)."""
    import yaml

    return flatten_sections(yaml.safe_load((run / "config.yaml").read_text()))


def validation_accuracy(summary: dict) -> float | None:
    """A run's validation accuracy at its own choice (C and pooled stages, k, or epoch)."""
    for key in ("val_accuracy_by_power_and_C", "val_accuracy_by_k"):
        if summary.get(key):
            return float(max(summary[key].values()))
    return summary.get("best_val_accuracy")


def _backbones(config: TrainConfig, prep: Prepared) -> list[str]:
    if "backbone" in config.model_fields_set:
        return [config.backbone]
    installed = [b for b in offline_names() if b != config.backbone]
    return [config.backbone, *installed]


def _composite_views(prep: Prepared) -> int:
    """How many three-band views ``--band-init composites`` runs on these chips; 0 when it
    cannot (bands without red, green and blue names)."""
    try:
        return len(prep.images.layout.composites()) if prep.images.layout else 0
    except ConfigError:
        return 0


def _multispectral(prep: Prepared) -> bool:
    return prep.images.pixels.shape[1] != 3


def _short(backbone: str) -> str:
    return backbone.replace("tf_efficientnet_", "").replace("_", "-")


def _probe_cost(c: Costs, n: dict[str, int], views: int = 1, decoded: bool = False) -> float:
    # Decode (a new size is a new decode), one forward pass per chip and view, and the fits.
    decode = 0.0 if decoded else c.decode
    return n["all"] * (decode + views * c.forward) + 2.0 + 2e-4 * n["train"]


def measure_costs(backbone: str, config: TrainConfig, prep: Prepared) -> Costs:
    """Seconds per chip for decoding, a frozen forward pass and a training step of
    ``backbone`` at its input size, from a few timed batches (after one warm-up batch)."""
    model, pre, _ = build_classifier(
        backbone,
        config.weights,
        len(prep.classes),
        image_size=config.image_size,
    )  # fmt: skip  (RGB timing; multispectral runs are corrected after the first one)
    folder = prep.images.folder
    paths = [folder.root / p for p in folder.paths[:: max(1, len(folder.paths) // TIMED_CHIPS)]]
    t0 = time.perf_counter()
    for p in paths[:TIMED_CHIPS]:
        read_chip(p, pre.size, pre.interpolation, prep.images.layout)  # cold: file + resize
    workers = max(1, min(config.num_workers or torch.get_num_threads(), torch.get_num_threads()))
    decode = (time.perf_counter() - t0) / len(paths[:TIMED_CHIPS]) / workers
    x = torch.randn(TIMED_CHIPS, 3, pre.size, pre.size)
    x = x.contiguous(memory_format=torch.channels_last)
    model = model.to(memory_format=torch.channels_last)
    forward = _timed(lambda: model.eval()(x), grad=False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    y = torch.zeros(TIMED_CHIPS, dtype=torch.long)

    def step():
        model.train()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    train_step = _timed(step, grad=True)
    return Costs(decode, forward / TIMED_CHIPS, train_step / TIMED_CHIPS, pre.size)


def _timed(fn: Callable[[], Any], grad: bool) -> float:
    with torch.set_grad_enabled(grad):
        fn()  # warm-up: allocations, kernel choices
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
