"""Typed, strict name -> class registries: a config picks a component by name, adding one is one class.

    OPERATORS: Registry[RelationOperator] = Registry("operator")

    @OPERATORS.register("translation")
    class Translation(RelationOperator): ...

A second class under a name already taken is an error at import time (two plugins silently
replacing each other is the bug this prevents), and an unknown name is an error that lists the
choices, so a config typo says what would have worked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, type[T]], Generic[T]):
    """Registered subclasses of T by name, in registration order.

    Each registered class gets its name as the `name` attribute, for its own messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: `@OPERATORS.register("translation")`; refuses a taken name."""

        def add(cls: type[T]) -> type[T]:
            taken = self._classes.get(name)
            if taken is not None and taken is not cls:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered to {taken.__qualname__}; "
                    f"cannot register {cls.__qualname__} under the same name"
                )
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return add

    def check(self, name: str) -> str:
        """A pydantic validator: the name must be registered (the error lists the choices)."""
        if name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self)}")
        return name

    def __getitem__(self, name: str) -> type[T]:
        if name not in self._classes:
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self)}")
        return self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)
