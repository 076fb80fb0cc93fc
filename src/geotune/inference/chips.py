"""`geotune predict` on chips: files, folders and list files, streamed batch by batch.

Each batch is decoded (threads; PIL releases the GIL), resized like the training chips
(geotune.data.decode.resize_chip) and predicted while the next batch decodes; nothing is
cached, so memory stays flat however many files there are. Unreadable files are skipped and
listed with their reason beside the output.
"""

from __future__ import annotations

import csv
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from geotune.data.bands import BandLayout
from geotune.data.decode import read_chip
from geotune.data.folder import IGNORED_FILES, IMAGE_EXTENSIONS, default_workers
from geotune.data.raster import band_files
from geotune.errors import DataError, GeotuneError
from geotune.fileio import atomic_write_text
from geotune.inference.config import PredictOptions
from geotune.inference.model import Predictor, card_path
from geotune.inference.outputs import OutputSet


@dataclass
class ChipInputs:
    """The chips to predict, in order, with a true class where a class sub-folder names one."""

    paths: list[Path] = field(default_factory=list)
    true: list[str | None] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def add(self, path: Path, true: str | None = None) -> None:
        self.paths.append(path)
        self.true.append(true)


def collect_chips(inputs: list[Path], classes: list[str]) -> ChipInputs:
    """Expand files, folders (recursive) and ``.txt`` lists (one path a line) into chips.

    A chip under ``FOLDER/<class>/...`` whose first sub-folder is one of the model's classes
    gets that class as its true class.

    Args:
        inputs: what the user passed.
        classes: the model's classes.

    Returns:
        The chips; paths a list file names but that do not exist are in ``missing``.
    """
    out, known = ChipInputs(), set(classes)
    for item in map(Path, inputs):
        if item.is_dir() and band_files(item):
            out.add(item)
        elif item.is_dir():
            add_folder(out, item, known)
        elif item.is_file() and item.suffix.lower() == ".txt":
            add_list(out, item, known)
        elif item.is_file():
            out.add(item)
        else:
            raise DataError(f"input {item} not found; pass chip files, folders or a .txt list")
    if not out.paths and not out.missing:
        raise DataError(
            f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in "
            f"{', '.join(map(str, inputs))}"
        )
    return out


def add_folder(out: ChipInputs, root: Path, known: set[str]) -> None:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(root).parts
        true = rel[0] if rel and rel[0] in known else None
        if band_files(Path(folder)):  # a folder of band files (BigEarthNet) is one chip
            out.add(Path(folder), true)
            dirs[:] = []
            continue
        for name in sorted(files):
            if name.startswith(".") or name in IGNORED_FILES:
                continue
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                out.add(Path(folder) / name, true)


def add_list(out: ChipInputs, listing: Path, known: set[str]) -> None:
    for line in listing.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line) if Path(line).is_absolute() else listing.parent / line
        if path.is_dir() and band_files(path):
            out.add(path)
        elif path.is_dir():
            add_folder(out, path, known)
        elif path.is_file():
            out.add(path)
        else:
            out.missing.append((str(path), f"not found (listed in {listing})"))


def decode_chip(
    path: Path, size: int, interpolation: str, bands: dict | None = None
) -> np.ndarray | str:
    """One chip as CHW uint8 at the model's size (or the bands of a multispectral model,
    ``Preprocessing.bands``), or the reason it cannot be read."""
    try:
        layout = BandLayout.from_dict(bands) if bands else None
        return read_chip(path, size, interpolation, layout)
    except GeotuneError as err:
        return str(err).removeprefix(str(path)).split(";")[0].strip()
    except Exception as err:  # noqa: BLE001 - any file that fails to decode is skipped, not fatal
        return f"cannot be decoded ({type(err).__name__}: {err})"


def decoded_batches(
    paths: list[Path],
    size: int,
    interpolation: str,
    batch_size: int,
    workers: int,
    bands: dict | None = None,
) -> Iterator[tuple[list[int], list[np.ndarray | str]]]:
    """(indices, decoded chips or reasons) per batch; two batches decode ahead, no more."""
    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for start in starts:
            idx = list(range(start, min(start + batch_size, len(paths))))
            pending.append(
                (idx, [pool.submit(decode_chip, paths[i], size, interpolation, bands) for i in idx])
            )
            if len(pending) > 2:
                done_idx, futures = pending.popleft()
                yield done_idx, [f.result() for f in futures]
        while pending:
            done_idx, futures = pending.popleft()
            yield done_idx, [f.result() for f in futures]


def csv_header(top_k: int, labelled: bool, labels: list[str] | None = None) -> list[str]:
    """The predictions CSV's columns; ``labels`` (a multi-label model's): the predicted label
    set and every label's probability instead of ranked classes."""
    if labels is not None:
        return ["path", "predicted_labels", *(f"p_{c}" for c in labels)]
    ranks = [c for r in range(1, top_k + 1) for c in (f"class_{r}", f"probability_{r}")]
    return ["path", "predicted_class", "probability", *ranks] + (["true_class"] if labelled else [])


def csv_rows(predictor: Predictor, chips: ChipInputs, idx, probs: torch.Tensor, top_k: int):
    labelled = any(t is not None for t in chips.true)
    p, c = probs.topk(min(top_k, probs.shape[1]), dim=1)
    for row, i in enumerate(idx):
        ranked = [
            v for r in range(p.shape[1])
            for v in (predictor.classes[int(c[row, r])], f"{float(p[row, r]):.6f}")
        ]  # fmt: skip
        ranked += ["", ""] * (top_k - p.shape[1])
        true = [chips.true[i] or ""] if labelled else []
        yield [str(chips.paths[i]), ranked[0], ranked[1], *ranked, *true]


def multilabel_rows(predictor: Predictor, chips: ChipInputs, idx, probs, calibrated: bool):
    """A multi-label model's rows: every label at or above its threshold, ';'-joined."""
    hits = predictor.decisions(probs, calibrated)
    for row, i in enumerate(idx):
        present = [c for c, hit in zip(predictor.classes, hits[row].tolist(), strict=True) if hit]
        yield [str(chips.paths[i]), ";".join(present), *(f"{float(v):.6f}" for v in probs[row])]


def write_batch(writer, predictor: Predictor, chips: ChipInputs, idx, probs, top_k, calibrated):
    """Write one batch's rows; (correct, labelled) among its chips with a true class."""
    if predictor.multilabel:
        writer.writerows(multilabel_rows(predictor, chips, idx, probs, calibrated))
        return 0, 0
    writer.writerows(csv_rows(predictor, chips, idx, probs, top_k))
    truth = [(chips.true[i], p) for i, p in zip(idx, probs.argmax(1).tolist(), strict=True)
             if chips.true[i] is not None]  # fmt: skip
    return sum(predictor.classes[p] == t for t, p in truth), len(truth)


@dataclass
class ChipPredictions:
    """What `predict_chips` wrote and measured."""

    output: Path
    n_predicted: int
    n_skipped: int
    skipped_file: Path | None
    accuracy: float | None
    n_labelled: int
    seconds: float
    chips_per_s: float
    calibrated: bool
    temperature: float


def skipped_path(output: Path) -> Path:
    """``predictions.csv`` -> ``predictions.skipped.txt`` (tab-separated path and reason)."""
    return output.with_name(f"{output.stem}.skipped.txt")


def predictor_inputs(predictor: Predictor, inputs: list[Path], label: str) -> dict:
    """What a prediction reads: the model (run folder, or exported file and its card) and the
    inputs; outputs may be none of them nor lie inside them."""
    source = Path(predictor.source)
    found: dict[str, Path] = {"RUN": source}
    if not source.is_dir():
        found["RUN (its card)"] = card_path(source)
    for i, path in enumerate(inputs):
        found[label if len(inputs) == 1 else f"{label} #{i + 1}"] = Path(path)
    return found


def predict_chips(
    predictor: Predictor,
    inputs: list[Path],
    output: Path,
    top_k: int = 3,
    options: PredictOptions | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> ChipPredictions:
    """Predict every chip of ``inputs`` into a CSV (see :func:`csv_header` for its columns).

    Args:
        predictor: from :func:`geotune.inference.model.load_predictor`.
        inputs: chip files, folders (recursive; class sub-folders give a true class), ``.txt``
            lists of paths.
        output: the CSV; unreadable files go to ``<stem>.skipped.txt`` beside it.
        top_k: ranked classes listed per chip.
        options: views, calibration, batch size and decode threads (defaults: PredictOptions()).
        overwrite: replace existing outputs.
        console: progress bar and log.

    Returns:
        Counts, accuracy on the chips with a true class, and throughput.
    """
    console = console or Console(stderr=True)
    opts = options or PredictOptions()
    calibrated = opts.calibrated
    output = Path(output)
    outputs = OutputSet(
        [output, skipped_path(output)], overwrite, predictor_inputs(predictor, inputs, "INPUTS")
    )
    # A multi-label chip's labels are not its folder's name: no true class from folders.
    chips = collect_chips(inputs, [] if predictor.multilabel else predictor.classes)
    labelled = any(t is not None for t in chips.true)
    skipped, correct, n_labelled, n_done = list(chips.missing), 0, 0, 0
    prep, t0 = predictor.preprocessing, time.perf_counter()
    with (
        outputs.writing(),
        open(outputs.temp(output), "w", newline="") as fh,
        progress_bar(console) as bar,
    ):
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(
            csv_header(top_k, labelled, predictor.classes if predictor.multilabel else None)
        )
        task = bar.add_task("predict", total=len(chips.paths))
        batches = decoded_batches(
            chips.paths,
            prep.size,
            prep.interpolation,
            opts.batch_size,
            opts.workers or default_workers(),
            prep.bands,
        )
        for idx, decoded in batches:
            good = [i for i, d in zip(idx, decoded, strict=True) if not isinstance(d, str)]
            skipped += [(str(chips.paths[i]), d) for i, d in zip(idx, decoded, strict=True)
                        if isinstance(d, str)]  # fmt: skip
            if good:
                x = torch.from_numpy(np.stack([d for d in decoded if not isinstance(d, str)]))
                probs = predictor.probabilities(x, opts.tta, calibrated)
                hits, seen = write_batch(writer, predictor, chips, good, probs, top_k, calibrated)
                correct, n_labelled = correct + hits, n_labelled + seen
                n_done += len(good)
            bar.update(task, advance=len(idx))
        fh.flush()
        if skipped:
            text = "".join(f"{p}\t{r}\n" for p, r in skipped)
            atomic_write_text(outputs.temp(skipped_path(output)), text)
    seconds = time.perf_counter() - t0
    return ChipPredictions(
        output, n_done, len(skipped), skipped_path(output) if skipped else None,
        correct / n_labelled if n_labelled else None, n_labelled, seconds,
        n_done / max(seconds, 1e-9), calibrated, predictor.temperature if calibrated else 1.0,
    )  # fmt: skip


def progress_bar(console: Console):
    """A transient progress bar on ``console``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
