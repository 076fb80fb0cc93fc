"""``--strategy auto``: the transfer strategy chosen from the data, with the reason recorded.

The rule (README, "Strategies"), from geotune's own benchmarks (BENCHMARKS.md); a backbone
ensemble (``a+b``) always gets ``linear-probe``, the strategy it exists for:

1. Fewer than ``FEW_LABELS`` training chips per class (median over classes) -> ``linear-probe``:
   at 5 and 20 labels per class on AID it beat feature extraction and lp-ft, in a fraction of
   their time; at 32 per class on RSSCN7 full fine-tuning already beat it by 3 points.
   Multispectral chips through RGB weights whose stem would be rewired to more bands (no
   ``--band-init`` given) are probed as false-colour composites instead: on 13-band EuroSAT
   (8 chips per class, 7 seeds) that probe reached 85.4%, the rewired stem's 79.1% and full
   fine-tuning 76.9% (BENCHMARKS.md).
2. A rewired stem with enough labels -> ``full``: the stem has to learn the new bands from the
   first step. A head-only phase (lp-ft) fits a head to the untrained stem's garbled features
   and leaves the stem fewer epochs: on 13-band EuroSAT full fine-tuning beat lp-ft on all
   7 seeds, by 8.5 points on average (measured at 8 chips per class, the most that dataset has).
3. Otherwise a quick probe: a logistic regression on frozen features of at most
   ``PROBE_CHIPS`` training chips per class, scored on the validation chips. At or above
   ``CLOSE_DOMAIN`` the pretrained features already separate the classes (the data is close to
   the pretraining) -> ``linear-probe``; below it the backbone has something to learn -> ``lp-ft``
   (92.6% on AID 20/80 against the probe's 88.1%; tied with full fine-tuning on RSSCN7 over
   15 seeds).
"""

from __future__ import annotations

import numpy as np
import torch
from rich.console import Console

from geotune.config import TrainConfig
from geotune.engine.prepare import Prepared, prepare
from geotune.models.names import backbone_members

FEW_LABELS = 30
PROBE_CHIPS = 20
CLOSE_DOMAIN = 0.97


def resolve_auto(config: TrainConfig, console: Console) -> tuple[TrainConfig, dict]:
    """The config with ``strategy`` chosen by the rule, and the record of why."""
    from geotune.config import make_config

    probe = prepare(config.model_copy(update={"strategy": "linear-probe"}), console)
    chosen, record = choose_strategy(probe)
    update: dict = {"strategy": chosen}
    if "band_init" in record:  # rule 1: the probe reads composites, not a rewired stem
        update["band_init"] = record["band_init"]
    if chosen == "linear-probe" and config.sampler != "shuffle":
        # A probe fits every labelled chip once: the balanced sampler becomes balanced weights.
        update.update(sampler="shuffle", class_weights="balanced")
        record["note"] = "sampler balanced -> class_weights balanced (a probe draws no batches)"
    if chosen == "lp-ft" and config.epochs <= config.head_epochs:
        head = max(1, config.epochs // 4)
        if config.epochs > head:
            update["head_epochs"] = head
            record["note"] = f"head_epochs {config.head_epochs} -> {head} (epochs {config.epochs})"
        else:  # one epoch leaves no room for a head-only phase
            chosen = update["strategy"] = "full"
            record["note"] = "lp-ft needs two epochs or more: full fine-tuning instead"
    console.log(f"strategy auto: {chosen} ({record['why']})")
    chosen_config = make_config(**{**config.model_dump(), **update})  # validated again
    return chosen_config, {"chose": chosen, **record}


def choose_strategy(prep: Prepared) -> tuple[str, dict]:
    """Apply the rule to prepared data (a linear-probe preparation: split made, model built).

    Multi-label data count positive training chips per label; the quick probe (a single-label
    measure) is not run for them: with enough positives they get the fine-tuning default.
    """
    if prep.multilabel:
        counts = prep.targets[prep.indices("train")].sum(0)
    else:
        labels = prep.images.folder.labels
        counts = np.bincount(labels[prep.indices("train")], minlength=len(prep.classes))
    per_class = float(np.median(counts[counts > 0]))
    record: dict = {"train_chips_per_class_median": per_class}
    if len(backbone_members(prep.config.backbone)) > 1:
        return "linear-probe", {**record, "why": "an ensemble of frozen backbones serves probes"}
    stem = prep.stem or {}
    rewired = bool(stem) and stem.get("band_init") != "composites"
    if per_class < FEW_LABELS:
        # Composites pool no stages: a user who asked for more keeps the rewired stem.
        if rewired and prep.config.band_init is None and max(prep.config.probe_stages or [1]) == 1:
            strategy, why = label_rule(per_class, None)
            why += "; multispectral bands as false-colour composites (the stem left as trained)"
            return strategy, {**record, "why": why, "band_init": "composites"}
        return _ruled(per_class, None, record)
    if rewired:
        why = "an RGB stem rewired to more bands has to learn them from the first step"
        return "full", {**record, "why": why}
    if prep.multilabel:
        return _ruled_multilabel(per_class, record)
    accuracy = quick_probe_accuracy(prep)
    record["quick_probe_val_accuracy"] = accuracy
    return _ruled(per_class, accuracy, record)


def _ruled(per_class: float, accuracy: float | None, record: dict) -> tuple[str, dict]:
    strategy, why = label_rule(per_class, accuracy)
    return strategy, {**record, "why": why}


def _ruled_multilabel(per_label: float, record: dict) -> tuple[str, dict]:
    strategy, why = multilabel_rule(per_label)
    return strategy, {**record, "why": why}


def multilabel_rule(per_label: float) -> tuple[str, str]:
    """The rule for multi-label data, from the median positive training chips per label: the
    probe below FEW_LABELS, else lp-ft (no quick probe: its measure is single-label)."""
    if per_label < FEW_LABELS:
        return "linear-probe", (
            f"median {per_label:g} positive training chips per label (< {FEW_LABELS}): "
            "fine-tuning would overfit"
        )
    return "lp-ft", (
        f"median {per_label:g} positive training chips per label (>= {FEW_LABELS}): fine-tune "
        "(multi-label data: no quick probe)"
    )


def label_rule(per_class: float, probe_val_accuracy: float | None) -> tuple[str, str]:
    """The rule's label and domain part: (strategy, why) from the median training chips per class
    and a probe's validation accuracy (None: not measured). `compare` cites it beside its results."""
    if per_class < FEW_LABELS:
        return "linear-probe", (
            f"median {per_class:g} training chips per class (< {FEW_LABELS}): "
            "fine-tuning would overfit"
        )
    if probe_val_accuracy is None:
        return "lp-ft", "enough labels, and no validation chips to probe with"
    if probe_val_accuracy >= CLOSE_DOMAIN:
        return "linear-probe", (
            f"frozen features already reach {probe_val_accuracy:.1%} on validation "
            f"(>= {CLOSE_DOMAIN:.0%})"
        )
    return (
        "lp-ft",
        f"enough labels and frozen features at {probe_val_accuracy:.1%} on validation: fine-tune",
    )


def quick_probe_accuracy(prep: Prepared) -> float | None:
    """Validation accuracy of a logistic regression on frozen features of a few training chips
    per class (the cheap measure of how far the data is from the backbone's pretraining)."""
    from geotune.engine.fabric import resolve_device
    from geotune.engine.features import run_backbone
    from geotune.engine.probe import fit_logistic
    from geotune.models.classifier import signed_power

    val = prep.indices("val")
    if not len(val):
        return None
    labels = prep.images.folder.labels
    rng = np.random.default_rng(prep.config.seed)
    train = prep.indices("train")
    few = np.concatenate(
        [rng.permutation(train[labels[train] == c])[:PROBE_CHIPS] for c in np.unique(labels[train])]
    )
    val = rng.permutation(val)[: PROBE_CHIPS * len(prep.classes)]
    chips = np.sort(np.concatenate([few, val]))
    device = resolve_device(prep.config.device)
    feats = run_backbone(
        prep.model.backbone.to(device), prep.preprocessing, prep.images.pixels[chips], 64, device
    )
    feats = signed_power(torch.from_numpy(feats), 0.5).numpy()  # the probe's usual choice
    at = {c: i for i, c in enumerate(chips)}
    tr, va = [at[c] for c in few], [at[c] for c in val]
    scaler, clf = fit_logistic(feats[tr], labels[few], 1.0)
    return float((clf.predict(scaler.transform(feats[va])) == labels[val]).mean())
