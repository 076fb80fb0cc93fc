"""Resource metering of a run: peak memory and parameter counts."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import torch
from torch import nn


def command_started() -> float:
    """When this process started, on ``time.monotonic()``'s clock: a command's wall-clock budget
    is the user's, so the interpreter's start and the imports (5-10 s here) count in it. Linux
    /proc; elsewhere now."""
    try:
        # /proc/self/stat: after the ")" closing the command name, field 22 (starttime) is the
        # 20th, in clock ticks since boot; /proc/uptime is seconds since boot.
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        age = 0.0
    return time.monotonic() - age


def reset_peak_memory(device: torch.device) -> None:
    """Start a run's peak-memory count afresh, so runs in one process (a compare grid) each
    report their own peak rather than the process's."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux >= 4.0: writing 5 resets the peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass  # elsewhere the figure stays the process's peak


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as fh:
            hwm = next(line for line in fh if line.startswith("VmHWM:"))
        return int(hwm.split()[1]) / 1024  # kB
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return rss / 1024 if platform.system() == "Linux" else rss / 2**20


def count_params(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
