"""What `--strategy auto` chooses on the development datasets, and why (issue 13).

For AID and rsscn7_dev200 at several label budgets, prints the rule's inputs (training chips per
class, the quick probe's validation accuracy) and its choice. Offline Lite0, default options.

    .venv/bin/python benchmarks/auto_choice.py
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from geotune.config import make_config
from geotune.engine.auto import resolve_auto

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CASES = [
    ("aid150", {"labels_per_class": 5}),
    ("aid150", {"train_fraction": 0.2}),
    ("aid150", {"train_fraction": 0.5}),
    ("rsscn7_dev200", {"train_fraction": 0.2}),
    ("rsscn7_dev200", {"train_fraction": 0.5}),
]


def main() -> None:
    quiet = Console(quiet=True)
    for data, budget in CASES:
        cfg = make_config(data=SHARED / data, strategy="auto", **budget)
        chosen, record = resolve_auto(cfg, quiet)
        print(json.dumps({"data": data, **budget, **record}), flush=True)


if __name__ == "__main__":
    main()
