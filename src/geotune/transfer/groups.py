"""Layer groups of a backbone (timm's ``group_matcher``) and which of them train."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geotune.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn


@dataclass
class LayerGroup:
    """Consecutive backbone modules that freeze and share a learning rate together."""

    name: str
    modules: list[str]  # qualified module names inside the SceneClassifier
    params: list[nn.Parameter]


def _group_name(index: int, first_module: str) -> str:
    if index == 0:
        return "stem"
    parts = first_module.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])  # blocks.3
        if re.search(r"\d+$", part):
            return ".".join(parts[: i + 1])  # layer3, stages.2 handled above
    return parts[0]


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """Backbone groups in forward order (stem first), then the head.

    ``model`` is a SceneClassifier: ``model.backbone`` is a timm model, ``model.head`` the head.
    """
    from timm.models import group_modules

    backbone, prefix = model.backbone, "backbone."
    while hasattr(backbone, "net") and not hasattr(backbone, "group_matcher"):
        # CompositeBackbone, StagePooling, BandStatistics: the network they wrap
        backbone, prefix = backbone.net, f"{prefix}net."

    if hasattr(backbone, "members"):  # BackboneEnsemble (probes only): one group per member
        groups = [
            LayerGroup(f"member{i}", [f"{prefix}members.{i}"], list(m.parameters()))
            for i, m in enumerate(backbone.members)
        ]
        return [*groups, LayerGroup("head", ["head"], list(model.head.parameters()))]
    matcher = backbone.group_matcher(coarse=True)
    grouped = group_modules(backbone, matcher)
    groups: list[LayerGroup] = []
    seen: set[int] = set()
    named = dict(backbone.named_modules())
    for index, (_, names) in enumerate(sorted(grouped.items())):
        params = []
        for n in names:
            for p in named[n].parameters(recurse=False) if n in named else []:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
            # Parameters registered directly on the backbone (ViT cls_token, pos_embed) come as names.
            if n not in named:
                p = backbone.get_parameter(n)
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
        groups.append(
            LayerGroup(_group_name(index, names[0]), [f"{prefix}{n}" for n in names], params)
        )
    leftover = [p for p in backbone.parameters() if id(p) not in seen]
    if leftover:  # anything the matcher missed (e.g. a final norm) joins the last group
        groups[-1].params.extend(leftover)
    # Unique names: a model may reuse a prefix across groups (e.g. conv_head joins blocks.6).
    counts: dict[str, int] = {}
    for g in groups:
        counts[g.name] = counts.get(g.name, 0) + 1
        if counts[g.name] > 1:
            g.name = f"{g.name}#{counts[g.name]}"
    groups.append(LayerGroup("head", ["head"], list(model.head.parameters())))
    return groups


def frozen_prefix(
    groups: list[LayerGroup], freeze_until: str | None = None, unfreeze_last: int | None = None
) -> int:
    """How many backbone groups, counted from the stem, stay frozen (the cut index).

    ``freeze_until`` names the last frozen group; ``unfreeze_last`` counts trainable groups from
    the top. Neither: nothing frozen.
    """
    names = [g.name for g in groups[:-1]]
    if freeze_until is not None:
        if freeze_until not in names:
            raise ConfigError(
                f"freeze_until '{freeze_until}' is not a layer group of this backbone; "
                f"groups are: {', '.join(names)}"
            )
        return names.index(freeze_until) + 1
    if unfreeze_last is not None:
        if unfreeze_last > len(names):
            raise ConfigError(
                f"unfreeze_last={unfreeze_last} but the backbone has {len(names)} layer groups "
                f"({', '.join(names)})"
            )
        return len(names) - unfreeze_last
    return 0


def trainable_flags(groups: list[LayerGroup], cut: int) -> tuple[bool, ...]:
    """One flag per group: backbone groups from index ``cut`` on train, and the head always."""
    return tuple(i >= cut for i in range(len(groups) - 1)) + (True,)


def apply_trainable(groups: list[LayerGroup], flags: list[bool]) -> None:
    for group, flag in zip(groups, flags, strict=True):
        for p in group.params:
            p.requires_grad_(flag)
