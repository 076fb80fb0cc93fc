"""Batches from the decoded array, and their prefetching onto an accelerator."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from geotune.data.cache import read_rows


def index_batches(
    indices: Sequence[int] | np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """Chip indices per batch, in visiting order (shuffled by ``generator`` when asked)."""
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    if shuffle:
        idx = idx[torch.randperm(len(idx), generator=generator)]
    stop = len(idx) - (len(idx) % batch_size if drop_last else 0)
    return [idx[start : start + batch_size].numpy() for start in range(0, stop, batch_size)]


def load_batch(
    pixels: np.ndarray, labels: np.ndarray, idx: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images, labels) of chips ``idx``, in that order; sorted reads from the memmap."""
    b = np.sort(idx)
    order = np.argsort(np.argsort(idx))
    x = torch.from_numpy(read_rows(pixels, b))[order]  # RSS flat in the number of chips
    return x, torch.from_numpy(np.asarray(labels)[b])[order]


def iterate_batches(
    pixels: np.ndarray,
    labels: np.ndarray,
    indices: Sequence[int] | np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) batches from the decoded array.

    Hand-written rather than a DataLoader: the chips are already decoded in one array, so a batch
    is a single fancy-index; loader workers would only add inter-process copies.
    """
    for idx in index_batches(indices, batch_size, shuffle, generator, drop_last):
        yield load_batch(pixels, labels, idx)


def shard(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This process's share of a global batch (data parallelism: every rank loads only its own)."""
    return idx[rank::world]


def image_batches(
    pixels: np.ndarray,
    indices,
    batch_size: int,
    normalize,
    device,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Normalised, channels-last image batches without labels (statistics, features, TTA)."""
    dummy = np.zeros(len(pixels), dtype=np.int64)
    for x, _ in iterate_batches(pixels, dummy, indices, batch_size, shuffle, generator):
        yield normalize(x.to(device)).contiguous(memory_format=torch.channels_last)


def prefetch(
    batches: Iterator, device: torch.device | str, depth: int = 2, thread: bool | None = None
) -> Iterator:
    """On CUDA, read the next ``depth`` batches from the cache in a background thread into pinned
    memory: host reads overlap GPU compute and ``.to(device, non_blocking=True)`` really is
    asynchronous. On CPU the batches pass through unchanged (a thread would only compete with
    the model for the same cores). ``thread`` forces the choice (tests)."""
    cuda = torch.device(device).type == "cuda"
    if not (cuda if thread is None else thread):
        yield from batches
        return
    q: queue.Queue = queue.Queue(depth)
    done = object()

    def work() -> None:
        try:
            for x, y in batches:
                q.put((x.pin_memory(), y.pin_memory()) if cuda else (x, y))
        except BaseException as err:  # noqa: BLE001 - re-raised in the consuming thread
            q.put(err)
        q.put(done)

    threading.Thread(target=work, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
