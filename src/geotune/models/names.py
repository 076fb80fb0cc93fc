"""How a ``--backbone`` value names backbones (no torch or timm: config validates with it)."""

from __future__ import annotations


def backbone_members(name: str) -> list[str]:
    """The backbones a ``--backbone`` value names: itself, or each member of an ensemble ``a+b``."""
    return name.split("+")
