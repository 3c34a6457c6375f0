"""Render a config class tree as a markdown reference, so the docs cannot drift from the code.

    python -m tml.core.config_docs tml.projects.twhin.config:TwhinConfig \
        [--update docs/config-reference.md]

With --update, the text between the file's config-reference markers is replaced.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pydantic
from pydantic_core import PydanticUndefined


def _config_classes(annotation: Any) -> list[type[pydantic.BaseModel]]:
    """Config classes inside an annotation such as `list[X] | None`."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    found = []
    for argument in typing.get_args(annotation):
        found += _config_classes(argument)
    return found


def _type_name(annotation: Any) -> str:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Annotated:
        return _type_name(arguments[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in arguments)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in arguments)}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return "(section defaults)"
    if field.default is PydanticUndefined or field.default is None:
        return "unset"
    value = getattr(field.default, "value", field.default)
    return f"`{value}`"


def summary(docstring: str | None) -> str:
    """A class docstring's first paragraph on one line (it may span several source lines)."""
    paragraph = inspect.cleandoc(docstring or "").split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def reference(root: type[pydantic.BaseModel]) -> str:
    """Markdown: one table per config class (headed by every path it appears at), in the order
    a reader meets them."""
    paths: dict[type[pydantic.BaseModel], list[str]] = {root: ["top level"]}
    queue = [(root, "")]
    while queue:
        model, path = queue.pop(0)
        for name, field in model.model_fields.items():
            is_list = "list[" in str(field.annotation)
            child_path = f"{path}.{name}{'[]' if is_list else ''}".lstrip(".")
            for child in _config_classes(field.annotation):
                if child not in paths:
                    queue.append((child, child_path))
                paths.setdefault(child, []).append(child_path)
    lines = []
    for model, where in paths.items():
        title = ", ".join(f"`{p}`" for p in where)
        lines += [f"#### {title}", "", summary(model.__doc__), ""]
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            type_name = _type_name(field.annotation)
            lines.append(f"| `{name}` | {type_name} | {_default(field)} | {description} |")
        lines.append("")
    return "\n".join(lines)


START_MARKER = "<!-- config-reference:start -->"
END_MARKER = "<!-- config-reference:end -->"


def update_between_markers(path: Path, text: str) -> None:
    """Replace what lies between the config-reference markers of `path` with `text`."""
    content = path.read_text()
    start = content.index(START_MARKER) + len(START_MARKER)
    end = content.index(END_MARKER)
    path.write_text(content[:start] + "\n" + text.strip() + "\n" + content[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a config class tree as markdown.")
    parser.add_argument(
        "config_class", help="module:Class, e.g. tml.projects.twhin.config:TwhinConfig"
    )
    parser.add_argument("--update", type=Path, help="rewrite this file's reference section")
    args = parser.parse_args(argv)
    module, _, name = args.config_class.partition(":")
    text = reference(getattr(importlib.import_module(module), name))
    if args.update:
        update_between_markers(args.update, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
