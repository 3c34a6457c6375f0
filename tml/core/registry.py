"""Name -> class registries, so a config picks a component by name and adding one is one class."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


class Registry(dict[str, type]):
    """A dict of registered classes plus the decorator that fills it and a config check.

    Each registered class gets its name as the `name` attribute, for its own messages.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: `@OPERATORS.register("translation")`."""

        def add(cls: T) -> T:
            cls.name = name
            self[name] = cls
            return cls

        return add

    def check(self, name: str) -> str:
        """A pydantic validator: the name must be registered (the error lists the choices)."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self)}")
        return name
