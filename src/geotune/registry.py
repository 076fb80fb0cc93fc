"""One registry type for every extension point: strategies, BatchNorm policies, adaptation
methods, band initialisations and offline weights.

Each is a ``Registry`` of named entries. Built-in entries register when their module is imported;
a user's entry is one ``register`` call. A name can be registered once (a second entry under the
same name is a mistake, not an override), an unknown name is a ``ConfigError`` naming the option,
the closest registered name and the choices, and ``choices()`` feeds the CLI's help.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from geotune.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind``: what an entry is, e.g. "strategy"; ``option``: the
    option that names one, e.g. "--strategy")."""

    def __init__(self, kind: str, option: str):
        self.kind, self.option = kind, option
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` as ``name``; refuses a name already registered."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.kind} needs a non-empty name (got {name!r})")
        if name in self._entries:
            raise ValueError(
                f"{self.kind} '{name}' is already registered; choose another name, or "
                f"unregister('{name}') first to replace it"
            )
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove an entry (tests, and replacing an entry on purpose)."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry named ``name``; ConfigError with the closest name and the choices."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(self.unknown(name)) from None

    def unknown(self, name: object, extra: tuple[str, ...] = ()) -> str:
        """The one-line message for a name that is not registered (``extra``: other valid values
        the option takes, such as ``auto``)."""
        choices = [*extra, *self._entries]
        close = difflib.get_close_matches(str(name), choices, n=1) if isinstance(name, str) else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.option} '{name}'{hint}; use one of {', '.join(choices)}"

    def choices(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
