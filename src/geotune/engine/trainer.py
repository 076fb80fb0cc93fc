"""`geotune train`: fine-tune a pretrained backbone on a folder of scene chips and evaluate it.

``fit`` is the orchestration: phases, then epochs, each a ``train_epoch`` and a ``validate`` of
the engine (geotune.engine.loop), a checkpoint, and early stopping; then the test. A strategy is
a list of phases (geotune.transfer.strategies); each phase gets an optimizer over exactly its
trainable parameters and its own warmup + decay schedule. After every epoch the complete
training state is checkpointed atomically, so ``--resume`` continues a killed run and, with
``--deterministic``, ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from geotune.config import TrainConfig
from geotune.data.dataset import dataset_source, is_dataset_source
from geotune.data.folder import cache_root
from geotune.engine.fabric import resolve_device
from geotune.engine.loop import Engine, TrainState
from geotune.engine.outputs import finish_run, write_run_header
from geotune.engine.prepare import Prepared, RunResult, prepare
from geotune.errors import ConfigError, DataError
from geotune.fileio import atomic_write_csv
from geotune.models.classifier import save_classifier
from geotune.runs.artifacts import check_run_data, read_run_config
from geotune.runs.metering import count_params, peak_memory_mb, reset_peak_memory
from geotune.runs.paths import CACHE, existing_file, refuse_outputs_in_inputs
from geotune.runs.rundir import RunDir, new_run
from geotune.transfer.optim import resize_schedule
from geotune.transfer.strategies import Phase


def train(
    config: TrainConfig,
    console: Console | None = None,
    dataset=None,
    started: float | None = None,
) -> RunResult:
    """Validate inputs, then train and evaluate: the Python API behind `geotune train`.

    Args:
        config: a validated run configuration (``geotune.config.make_config``).
        console: where progress goes (stderr by default).
        dataset: a map-style dataset to train on instead of ``config.data`` (any placeholder
            path there is replaced): ``ds[i]`` is an ``(image, label)`` tuple or a torchgeo
            ``{"image": CxHxW, "label": int}`` dict, RGB on the 0-255 scale; class names from
            ``ds.classes`` when present. Read once into the decode cache (docs/data-api.md);
            config.yaml records ``python-dataset:<class>[<length>]``, so such a run cannot be
            resumed or re-evaluated from its folder alone.
        started: when the user's command began (``time.monotonic()``; the CLI passes its
            process's start): ``--time-budget`` counts from it. Default: now.

    Returns:
        The finished run folder and its test metrics, history and summary.

    Raises:
        GeotuneError: bad data, config or weights; nothing is written to the runs folder.
    """
    config = config.with_absolute_paths()
    if dataset is not None:
        if config.strategy == "auto":
            raise ConfigError(
                "--strategy auto is not available with a Python dataset yet; name a strategy "
                "(full, lp-ft, linear-probe, ...)"
            )
        config = config.model_copy(update={"data": Path(dataset_source(dataset))})
    # Checks that need no data come first: a user should not wait for decoding to learn them.
    refuse_train_outputs_in_inputs(config)
    resolve_device(config.device)
    if config.name is not None:
        new_run(config).check_available()
    if config.split is not None and not config.split.exists():
        raise DataError(
            f"split file {config.split} not found; pass the split.csv of an earlier run, or a "
            "folder of train.csv / val.csv / test.csv chip lists"
        )
    if config.time_budget is not None:
        if dataset is not None:
            raise ConfigError("--time-budget works on a data folder; not with a Python dataset")
        from geotune.engine.budget import train_within_budget

        return train_within_budget(config, train, console, started)
    auto = None
    if config.strategy == "auto":
        from geotune.engine.auto import resolve_auto

        config, auto = resolve_auto(config, console or Console(stderr=True))
    prep = prepare(config, console, dataset=dataset)
    prep.auto = auto
    if config.uses_cached_features():
        from geotune.engine.probe import fit_probe

        return fit_probe(prep, console)
    return fit(prep, console)


def refuse_train_outputs_in_inputs(config: TrainConfig, **more_inputs: Path | None) -> None:
    """The run folder (and cache) a training writes must not be, hold or lie inside an input
    (geotune.runs.paths); ``more_inputs`` adds e.g. the CLI's ``--config`` file."""
    inputs = {
        "--data": config.data,
        "--split": config.split,
        "--labels": config.labels,
        "--weights": existing_file(config.weights),
        **more_inputs,
    }
    holders: dict[str, Path | None] = {CACHE: cache_root()}
    outputs: dict[str, Path | None] = {}
    if config.name is None:
        holders["--output"] = config.output
    else:
        run = new_run(config)
        outputs = {"--output/--name": run.final, "--output/--name (staging)": run.staging}
    refuse_outputs_in_inputs(outputs, inputs, holders)


def resume(run_dir: Path, console: Console | None = None) -> RunResult:
    """Continue a killed or failed run from its last completed epoch (`geotune train --resume`).

    Args:
        run_dir: the run folder (or its ``.NAME.partial`` staging folder).
        console: where progress goes.

    Returns:
        The finished run, as ``train`` returns it.
    """
    run = RunDir.reopen(run_dir)
    state_was, why = run.previous_state
    (console or Console(stderr=True)).log(
        f"resuming {run.final} ({state_was or 'no status'}{f': {why}' if why else ''})"
    )
    try:
        config = read_run_config(run.path)
        if is_dataset_source(config.data):
            raise ConfigError(
                f"run {run.path.name} was trained on a Python dataset ({config.data}); it cannot "
                "be resumed from its folder: train it again with geotune.train(config, dataset=ds)"
            )
        if config.uses_cached_features():
            raise ConfigError(
                f"strategy '{config.strategy}' has no epochs to resume; run it again "
                "(features are cached)"
            )
        prep = prepare(config, console, split_file=run.path / "split.csv")
        check_run_data(run.path, prep.images.folder)
        state = TrainState.load(run.path / "checkpoints" / "last.pt")
    except BaseException:
        run.unlock()
        raise
    if state is not None and state.stopped_early:
        state.phase = len(prep.phases)
    return fit(prep, console, run=run, state=state)


def fit(
    prep: Prepared,
    console: Console | None = None,
    run: RunDir | None = None,
    state: TrainState | None = None,
) -> RunResult:
    """Train phase by phase, keep the best epoch on validation, evaluate it on the test part."""
    resuming = run is not None
    run = run or new_run(prep.config)
    engine = Engine(prep, console or Console(stderr=True))
    reset_peak_memory(engine.device)
    state = state or TrainState()
    if state.fresh:
        state.bn_note = engine.reestimate_batchnorm()
    else:
        engine.restore(state)
    if not engine.lead:  # a DDP process in step with the lead, which writes and evaluates
        _train_phases(engine, None, state)
        return RunResult(run.final, {}, state.history, {})
    with run.staged(resuming):
        if not resuming:
            write_run_header(run, prep)
        _log_start(engine, run, state)
        phase_log = _train_phases(engine, run, state)
        best = torch.load(
            run.path / "checkpoints" / "best.pt", map_location="cpu", weights_only=True
        )
        engine.raw.load_state_dict(best["state_dict"])
        probs, plain, test_time = engine.test(prep.config.tta)
        summary = _summary(engine, state, phase_log, test_time)
        # Multi-label: the kept epoch's validation probabilities choose the label thresholds.
        val = engine.val_probabilities(shared=False)[0] if prep.multilabel else None
        (run.path / "checkpoints" / "last.pt").unlink(missing_ok=True)  # not needed once done
        return finish_run(
            run, prep, probs, plain, summary, engine.console, state.best_epoch, val_scores=val
        )


def _log_start(engine: Engine, run: RunDir, state: TrainState) -> None:
    p, cfg = engine.prep, engine.prep.config
    parts = (len(p.indices("train")), len(p.indices("val")), len(p.indices("test")))
    engine.console.log(
        f"run {run.final}: {cfg.strategy} on {cfg.backbone} ({p.weights}); "
        f"{parts[0]} train / {parts[1]} val / {parts[2]} test; "
        f"{engine.device} {engine.precision}"
        + (f"; resumed at phase {state.phase + 1}, epoch {state.epoch_in_phase + 1}"
           if not state.fresh else "")
    )  # fmt: skip


def _train_phases(engine: Engine, run: RunDir | None, state: TrainState) -> list[dict]:
    """Every remaining epoch of every phase; ``run`` None on processes that write nothing."""
    phases = engine.prep.phases
    most = phases[-1].epochs if phases else 0  # --epochs-by-time never plans beyond this
    if state.last_phase_epochs is not None:  # fitted to --max-time before a resume
        phases[-1] = replace(phases[-1], epochs=state.last_phase_epochs)
    phase_log: list[dict] = []
    start_phase, start_epoch = state.phase, state.epoch_in_phase
    global_epoch = sum(ph.epochs for ph in phases[:start_phase]) + start_epoch
    total = sum(ph.epochs for ph in phases)
    with _progress(engine.console) as progress:
        for pi, phase in enumerate(phases):
            if pi < start_phase or state.stopped_early:
                continue
            resumed_here = not state.fresh and pi == start_phase and state.optimizer is not None
            bn, optimizer, scheduler, log = engine.setup_phase(phase, state, resumed_here)
            phase_log.append(log)
            engine.console.log(
                f"phase {pi + 1}/{len(phases)} '{phase.name}': "
                f"{log['trainable_params']:,} of {log['total_params']:,} parameters trainable"
            )
            e = start_epoch if pi == start_phase else 0
            while e < phase.epochs:
                global_epoch += 1
                task = progress.add_task(
                    "train", total=engine.batches_per_epoch, epoch=f"{global_epoch}/{total}",
                    loss=0.0, acc=0.0,
                )  # fmt: skip

                def advance(loss, acc, task=task):
                    progress.update(task, advance=1, loss=loss, acc=acc)

                t0 = time.perf_counter()
                stats = engine.train_epoch(bn, optimizer, scheduler, advance)
                state.train_seconds += stats.pop("train_seconds")
                images_per_s = stats.pop("train_images_per_s")
                t_val = time.perf_counter()
                row = {"epoch": global_epoch, "phase": phase.name, **stats, **engine.validate()}
                row.update(epoch_time_s=time.perf_counter() - t0, train_images_per_s=images_per_s)
                row["val_time_s"] = time.perf_counter() - t_val
                progress.remove_task(task)
                last = pi == len(phases) - 1
                if last and engine.config.epochs_by_time:
                    phase = _fit_phase_to_time(engine, state, row, scheduler, e + 1, most)
                    total = sum(ph.epochs for ph in phases)
                _end_epoch(engine, run, state, row, last_phase=last)
                state.phase, state.epoch_in_phase = pi, e + 1
                e += 1
                if run is not None:
                    engine.snapshot(state, optimizer, scheduler)
                    state.save(run.path / "checkpoints" / "last.pt")  # after best.pt
                if state.stopped_early:
                    engine.console.log(
                        f"time limit: another epoch would end past max_time "
                        f"{engine.config.max_time:.0f}s"
                        if state.out_of_time
                        else f"early stop: no better validation "
                        f"{'mAP' if engine.multilabel else 'accuracy'} for {state.stale} epochs"
                    )
                    break
    return phase_log


def _end_epoch(
    engine: Engine, run: RunDir | None, state: TrainState, row: dict, last_phase: bool
) -> None:
    """History, best checkpoint and early stopping after one epoch."""
    state.history.append(row)
    val = f" val acc {row['val_accuracy']:.1%}" if "val_accuracy" in row else ""
    val += f" val mAP {row['val_map']:.1%}" if "val_map" in row else ""
    engine.console.log(
        f"epoch {row['epoch']}/{sum(p.epochs for p in engine.prep.phases)} ({row['phase']}): loss {row['train_loss']:.3f} "
        f"acc {row['train_accuracy']:.1%}{val} ({row['epoch_time_s']:.0f}s)"
    )
    score = row.get(engine.selection_metric, float(row["epoch"]))  # no validation: the last
    if score > state.best_acc:
        state.best_acc, state.best_epoch, state.stale = score, row["epoch"], 0
        if run is not None:
            meta = {**engine.prep.checkpoint_meta(), "epoch": row["epoch"]}
            save_classifier(run.path / "checkpoints" / "best.pt", engine.raw, meta)
    else:
        state.stale += 1
    patience = engine.config.patience
    state.stopped_early = bool(patience and last_phase and state.stale >= patience)
    if not state.stopped_early and _time_left(engine, state) < row["epoch_time_s"]:
        # The next epoch would end past --max-time: stop here, test the best epoch so far.
        state.stopped_early = state.out_of_time = True
    if run is not None:
        columns = list(dict.fromkeys(k for r in state.history for k in r))
        rows = ([r.get(k, "") for k in columns] for r in state.history)
        atomic_write_csv(run.path / "metrics.csv", columns, rows)


def _time_left(engine: Engine, state: TrainState) -> float:
    """Seconds of --max-time left for more epochs (infinite without it). Epoch times count, as
    they survive a resume; with --epochs-by-time the wall clock since the run was set up counts
    instead, and the test pass that follows is reserved too."""
    cfg = engine.config
    if cfg.max_time is None:
        return float("inf")
    if not cfg.epochs_by_time:
        return cfg.max_time - sum(r["epoch_time_s"] for r in state.history)
    return cfg.max_time - (time.monotonic() - engine.prep.created) - _test_estimate(engine, state)


def _test_estimate(engine: Engine, state: TrainState) -> float:
    """Seconds the test pass will take: the last validation pass's seconds per chip (a
    validation pass is a test pass on other chips), times the test views, plus the report."""
    p, row = engine.prep, state.history[-1]
    n_val, n_test = len(p.indices("val")), len(p.indices("test"))
    if n_val and row.get("val_time_s"):
        per_chip = row["val_time_s"] / n_val
    else:  # a forward pass is about a third of a training step
        per_chip = row["epoch_time_s"] / max(len(p.indices("train")), 1) / 3
    views = {"none": 1, "flip": 2, "rot2": 2, "rot4": 4, "d4": 8}[engine.config.tta]
    return n_test * per_chip * views + REPORT_S  # the views include the plain one


# Seconds kept for writing the test metrics, report and plots after the test pass.
REPORT_S = 2.0


def _fit_phase_to_time(
    engine: Engine, state: TrainState, row: dict, scheduler, done: int, most: int
) -> Phase:
    """--epochs-by-time: after each epoch of the last phase, give that phase as many epochs as
    end (with the test pass) within --max-time, at most ``most``, from the median epoch time so
    far (the first epoch carries warm-up), and fit its decay schedule to them, so the learning
    rate still anneals at the end instead of stopping mid-schedule."""
    phases = engine.prep.phases
    state.history.append(row)  # _time_left and the median read the epoch just run
    try:
        left = _time_left(engine, state)
        times = [r["epoch_time_s"] for r in state.history if r["phase"] == phases[-1].name]
    finally:
        state.history.pop()
    more = max(0, int(left // max(float(np.median(times)), 1e-6)))
    epochs = max(done, min(most, done + more))
    if epochs != phases[-1].epochs:
        if done == 1:
            engine.console.log(
                f"epochs by time: {epochs} epoch(s) of '{phases[-1].name}' end within "
                f"--max-time {engine.config.max_time:.0f}s (the first took "
                f"{row['epoch_time_s']:.0f}s)"
            )
        phases[-1] = replace(phases[-1], epochs=epochs)
        resize_schedule(scheduler, engine.config, engine.steps_per_epoch, epochs)
    state.last_phase_epochs = epochs
    return phases[-1]


def _summary(engine: Engine, state: TrainState, phase_log: list[dict], test_time: float) -> dict:
    history, cfg = state.history, engine.config
    trainable, total = count_params(engine.raw)
    n_test = len(engine.prep.indices("test"))
    return {
        "phases": phase_log,
        "bn_policy": cfg.bn_policy,
        "probe_stages": engine.prep.stages,  # pooled stages the head reads (feature extraction)
        "bn_note": state.bn_note,
        "trainable_params": max((p["trainable_params"] for p in phase_log), default=trainable),
        "total_params": total,
        "best_epoch": state.best_epoch,
        "best_val_accuracy": state.best_acc
        if len(engine.prep.indices("val")) and not engine.multilabel
        else None,
        "best_val_map": state.best_acc
        if len(engine.prep.indices("val")) and engine.multilabel
        else None,
        # Accuracy on the (augmented) training batches of the kept epoch: train - test = the gap.
        "train_accuracy": next(
            (r["train_accuracy"] for r in history if r["epoch"] == state.best_epoch), None
        ),
        "stopped_early": state.stopped_early,
        "epochs_run": len(history),
        "train_time_s": state.train_seconds,
        "time_per_epoch_s": float(np.mean([r["epoch_time_s"] for r in history]))
        if history
        else 0.0,
        "train_images_per_s": float(np.mean([r["train_images_per_s"] for r in history]))
        if history
        else 0.0,
        "test_images_per_s": n_test / max(test_time, 1e-9),
        "peak_memory_mb": peak_memory_mb(engine.device),
        "device": str(engine.device),
        "precision": engine.precision,
        "compile": cfg.compile,
        "cudnn": engine.cudnn,
        "cudnn_benchmark": engine.cudnn_benchmark,
        "history": history,
    }


def _progress(console: Console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.1%}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
