"""Transfer strategies: one registry entry each, declaring its phases and the options it reads.

A strategy that trains a network is a short list of phases. Each phase has its own set of
trainable layer groups, its own optimizer over exactly those parameters, and its own warmup +
decay schedule. A strategy without phases (``linear-probe``, ``knn``) fits a classifier on cached
frozen features instead (geotune.engine.probe).

The registry is the single source of the strategy names: the config validates against it, the
CLI's ``--help`` lists its descriptions, and ``compare`` asks it whether a strategy trains.
Adding a strategy is one ``register_strategy(StrategySpec(...))`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from geotune.errors import ConfigError
from geotune.registry import Registry
from geotune.transfer.groups import LayerGroup, frozen_prefix, trainable_flags
from geotune.transfer.options import TransferOptions


@dataclass(frozen=True)
class Phase:
    """Part of a strategy: ``epochs`` epochs with the layer groups flagged in ``trainable``."""

    name: str
    epochs: int
    trainable: tuple[bool, ...]  # one flag per layer group, head last

    @property
    def head_only(self) -> bool:
        return not any(self.trainable[:-1])


@dataclass(frozen=True)
class StrategySpec:
    """A registered transfer strategy.

    Args:
        name: the ``--strategy`` value.
        description: one line for ``--help`` and the README.
        plan: the phases for a config and the backbone's layer groups; None for strategies that
            train no network and fit a classifier on cached features (``probe_kind`` says which).
        options: config fields read only by strategies that list them (shown in their help).
        check: extra validation of a config using this strategy; raises ValueError.
        probe_kind: ``logistic`` or ``knn`` for cached-feature strategies.
    """

    name: str
    description: str
    plan: Callable[[TransferOptions, list[LayerGroup]], list[Phase]] | None = None
    options: tuple[str, ...] = ()
    check: Callable[[TransferOptions], None] | None = None
    probe_kind: str | None = None

    @property
    def trains_network(self) -> bool:
        return self.plan is not None


STRATEGIES: Registry[StrategySpec] = Registry("strategy", "strategy")


def register_strategy(spec: StrategySpec) -> StrategySpec:
    """Add a strategy to the registry (its name becomes a valid ``--strategy``)."""
    if (spec.plan is None) == (spec.probe_kind is None):
        raise ValueError(f"strategy '{spec.name}' needs exactly one of plan or probe_kind")
    return STRATEGIES.register(spec.name, spec)


def get_strategy(name: str) -> StrategySpec:
    return STRATEGIES.get(name)


def plan_phases(config: TransferOptions, groups: list[LayerGroup]) -> list[Phase]:
    """The phases of ``config.strategy`` on a backbone with these layer groups."""
    spec = get_strategy(config.strategy)
    if spec.plan is None:
        raise ConfigError(
            f"strategy '{spec.name}' trains no network; it is handled by geotune.engine.probe"
        )
    return spec.plan(config, groups)


# ---------------------------------------------------------------------------------------------
# The built-in strategies
# ---------------------------------------------------------------------------------------------
def _cut(config: TransferOptions, groups: list[LayerGroup]) -> int:
    return frozen_prefix(groups, config.freeze_until, config.unfreeze_last)


def _frozen_backbone(groups: list[LayerGroup]) -> tuple[bool, ...]:
    return trainable_flags(groups, len(groups) - 1)


def _check_partial(config: TransferOptions) -> None:
    if bool(config.freeze_until) == bool(config.unfreeze_last):
        raise ValueError("strategy 'partial' needs exactly one of freeze_until or unfreeze_last")


def _check_feature_extraction(config: TransferOptions) -> None:
    if config.probe_stages and len(config.probe_stages) > 1:
        raise ValueError(
            "feature-extraction trains one head: give one probe_stages value "
            f"(got {config.probe_stages}); the linear probe tries several"
        )


def _check_lp_ft(config: TransferOptions) -> None:
    if config.head_epochs >= config.epochs:
        raise ValueError(
            f"lp-ft needs epochs > head_epochs (got epochs={config.epochs}, "
            f"head_epochs={config.head_epochs})"
        )


def _plan_gradual(config: TransferOptions, groups: list[LayerGroup]) -> list[Phase]:
    # ULMFiT: the head alone, then one more group from the top every `unfreeze_every` epochs.
    n_backbone, epochs = len(groups) - 1, config.epochs
    phases, used, k = [], 0, 0
    while used < epochs:
        length = config.unfreeze_every if k < n_backbone else epochs - used
        length = min(length, epochs - used)
        name = "head" if k == 0 else f"unfreeze-{groups[n_backbone - k].name}"
        phases.append(Phase(name, length, trainable_flags(groups, n_backbone - k)))
        used += length
        k += 1
    return phases


register_strategy(
    StrategySpec(
        "linear-probe",
        "logistic regression on cached frozen features, C chosen on validation",
        options=("probe_c", "probe_power", "probe_stages", "probe_solver", "feature_engine"),
        probe_kind="logistic",
    )
)
register_strategy(
    StrategySpec(
        "knn",
        "cosine k-nearest neighbours on cached frozen features, k chosen on validation",
        options=("knn_k", "probe_stages", "feature_engine"),
        probe_kind="knn",
    )
)
register_strategy(
    StrategySpec(
        "feature-extraction",
        "a new head on a frozen backbone's pooled stages (probe_stages), with augmentation",
        plan=lambda c, g: [Phase("feature-extraction", c.epochs, _frozen_backbone(g))],
        options=("probe_stages",),
        check=_check_feature_extraction,
    )
)
register_strategy(
    StrategySpec(
        "partial",
        "the head and the last layer groups (freeze_until or unfreeze_last)",
        plan=lambda c, g: [Phase("partial", c.epochs, trainable_flags(g, _cut(c, g)))],
        options=("freeze_until", "unfreeze_last"),
        check=_check_partial,
    )
)
register_strategy(
    StrategySpec(
        "full",
        "everything trains",
        plan=lambda c, g: [Phase("full", c.epochs, trainable_flags(g, 0))],
    )
)
register_strategy(
    StrategySpec(
        "lp-ft",
        "the head alone for head_epochs, then everything (or the partial groups); "
        "Kumar et al. 2022: a random head distorts pretrained features",
        plan=lambda c, g: [
            Phase("head", c.head_epochs, _frozen_backbone(g)),
            Phase("fine-tune", c.epochs - c.head_epochs, trainable_flags(g, _cut(c, g))),
        ],
        options=("head_epochs", "freeze_until", "unfreeze_last"),
        check=_check_lp_ft,
    )
)
register_strategy(
    StrategySpec(
        "gradual",
        "the head, then one more group from the top every unfreeze_every epochs (ULMFiT)",
        plan=_plan_gradual,
        options=("unfreeze_every",),
    )
)
