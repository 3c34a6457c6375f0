"""YAML -> pydantic v2 config loading with errors that name the field path.

Every config class derives from `BaseConfig`, which forbids unknown keys, so a typo fails loudly
instead of being silently ignored. `load_config` turns pydantic's error list into one line per
problem (`model.relations[1].lhs: ...`) that a person can act on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

ConfigT = TypeVar("ConfigT", bound="BaseConfig")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the field path."""


# Cross-field validators report several problems as lines of `sub.path: problem`; the loader
# prefixes each with the model's own path, so every line names a full field path.
PROBLEM_SEPARATOR = "\n"


class BaseConfig(pydantic.BaseModel):
    """Base for all config sections: unknown keys are errors, values are validated on assignment,
    and fields declared with `unsupported_field` are rejected when set."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @pydantic.model_validator(mode="after")
    def _reject_unsupported_fields(self) -> BaseConfig:
        problems = []
        for name, field in type(self).model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            why, harmless = extra.get("unsupported"), extra.get("harmless")
            allowed = harmless if isinstance(harmless, list) else []
            value = getattr(self, name)
            if why and value is not None and value != field.default and value not in allowed:
                problems.append(f"{name}: not supported: {why}")
        if problems:
            raise ValueError(PROBLEM_SEPARATOR.join(problems))
        return self


def unsupported_field(why: str, default: Any = None, harmless: tuple = ()) -> Any:
    """A field the original TwHIN declared but tml-twhin cannot honour.

    Old configs that leave it at `default` (or at a `harmless` value that asks for nothing)
    still load; setting it to anything else is an error that says `why`.
    """
    return pydantic.Field(
        default,
        description=f"Not supported: {why}",
        json_schema_extra={"unsupported": why, "harmless": list(harmless)},
    )


def require_exactly_one(model: pydantic.BaseModel, names: list[str], what: str = "") -> None:
    """For validators of "exactly one of these blocks" sections (an optimizer, a schedule)."""
    chosen = [name for name in names if getattr(model, name) is not None]
    if len(chosen) != 1:
        raise ValueError(f"set exactly one {what}of {', '.join(names)} (got {chosen or 'none'})")


def _format_location(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "<root>"


def format_validation_error(error: pydantic.ValidationError) -> str:
    """One line per problem: `field.path: message (got value)`."""
    lines = []
    for item in error.errors():
        # Model validators report at the model's path; drop pydantic's "Value error, " prefix.
        message = str(item.get("msg", "")).removeprefix("Value error, ")
        location = _format_location(tuple(loc for loc in item["loc"] if not _is_union_tag(loc)))
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/config-reference.md)"
        elif item["type"] not in ("value_error", "assertion_error", "missing") and "input" in item:
            message += f" (got {item['input']!r})"
        for part in message.split(PROBLEM_SEPARATOR):
            # Cross-field validators report `sub.path: problem`; attach it to the model's path.
            if _RELATIVE_PATH.match(part):
                lines.append(part if location == "<root>" else f"{location}.{part}")
            else:
                lines.append(f"{location}: {part}")
    return "; ".join(lines)


_RELATIVE_PATH = re.compile(r"^[A-Za-z_][\w]*(\[\d+\])?(\.[A-Za-z_]\w*(\[\d+\])?)*: ")


def _is_union_tag(loc: Any) -> bool:
    # pydantic adds the class name of union members / function validators to locations.
    return isinstance(loc, str) and (loc.startswith("function-") or loc[:1].isupper())


def load_config(config_class: type[ConfigT], path: str | Path) -> ConfigT:
    """Read and validate a YAML config; raise `ConfigError` naming the file and field on failure."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; pass the YAML file itself")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (pass --config_yaml_path=FILE)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {raw!r}")
    try:
        return config_class.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"invalid config {path}: {format_validation_error(exc)}") from None
