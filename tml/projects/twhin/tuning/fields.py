"""Config paths of search-space parameters: `model.embeddings.tables[user].optimizer.lr`.

A path is dotted field names, each optionally followed by a list selector: `[name]` (the item
whose `name` is that), `[2]` (by position) or `[*]` (every item). Paths are checked against the
base config with every field filled in (so fields the YAML leaves at their default can be tuned)
and written into the YAML's own mapping, so trial configs look like the file they came from.

One field is virtual: `lr` of an optimizer block is its peak learning rate: the algorithm's `lr`
and the schedule's rates move together (a cosine's final rate keeps its ratio to the peak).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from tml.core.optimizers import ALGORITHMS

_TOKEN = re.compile(r"([A-Za-z_]\w*)(?:\[([^\]]+)\])?$")
LEARNING_RATE = "lr"


class FieldPathError(ValueError):
    """A path that does not name a settable field of the base config."""


def _tokens(path: str) -> list[tuple[str, str | None]]:
    tokens = []
    for part in path.split("."):
        match = _TOKEN.match(part)
        if not match:
            raise FieldPathError(f"{path!r}: cannot read {part!r} (fields are name or name[sel])")
        tokens.append((match.group(1), match.group(2)))
    return tokens


def _select(items: list[Any], selector: str, where: str) -> list[int]:
    if selector == "*":
        return list(range(len(items)))
    if selector.lstrip("-").isdigit():
        index = int(selector)
        if not -len(items) <= index < len(items):
            raise FieldPathError(f"{where}[{selector}]: only {len(items)} items")
        return [index % len(items)]
    matches = [i for i, item in enumerate(items) if isinstance(item, dict)
               and item.get("name") == selector]  # fmt: skip
    if not matches:
        names = [item.get("name") for item in items if isinstance(item, dict)]
        raise FieldPathError(f"{where}[{selector}]: no item named {selector!r} (names: {names})")
    return matches


def is_optimizer_block(node: Any) -> bool:
    return isinstance(node, dict) and "learning_rate" in node and any(a in node for a in ALGORITHMS)


def _targets(raw: dict[str, Any], full: dict[str, Any], path: str) -> list[tuple[Any, Any, Any]]:
    """(container in raw, same container in full, key or index) of every place `path` names.
    The virtual `lr` comes back as (optimizer block, optimizer block, LEARNING_RATE)."""
    tokens = _tokens(path)
    where = ""
    nodes: list[tuple[Any, Any]] = [(raw, full)]
    targets: list[tuple[Any, Any, Any]] = []
    for depth, (name, selector) in enumerate(tokens):
        last = depth == len(tokens) - 1
        next_nodes: list[tuple[Any, Any]] = []
        for raw_node, full_node in nodes:
            if last and name == LEARNING_RATE and is_optimizer_block(full_node):
                targets.append((raw_node, full_node, LEARNING_RATE))
                continue
            if not isinstance(full_node, dict) or name not in full_node:
                raise FieldPathError(f"{where or '<root>'}: no field {name!r}")
            if full_node[name] is None and not last:
                raise FieldPathError(f"{_join(where, name)}: not set in the base config")
            if last and selector is None:
                targets.append((raw_node, full_node, name))
                continue
            child_full = full_node[name]
            child_raw = raw_node.setdefault(name, {} if isinstance(child_full, dict) else None)
            if selector is None:
                next_nodes.append((child_raw, child_full))
                continue
            if not isinstance(child_full, list) or not isinstance(child_raw, list):
                raise FieldPathError(f"{_join(where, name)}: [{selector}] needs a list")
            for index in _select(child_full, selector, _join(where, name)):
                if last:
                    targets.append((child_raw, child_full, index))
                else:
                    next_nodes.append((child_raw[index], child_full[index]))
        nodes = next_nodes
        where = _join(where, name) + (f"[{selector}]" if selector else "")
    return targets


def set_field(raw: dict[str, Any], full: dict[str, Any], path: str, value: Any) -> None:
    """Set `path` to `value` in `raw` (the YAML mapping), checking it against `full` (the same
    config with defaults filled in). Missing mappings on the way are created in `raw`."""
    for raw_node, full_node, key in _targets(raw, full, path):
        if key == LEARNING_RATE and is_optimizer_block(full_node):
            set_peak_rate(raw_node, full_node, float(value))
        else:
            raw_node[key] = value


def read_field(full: dict[str, Any], path: str) -> list[Any]:
    """The values `path` names in a config with defaults filled in (several with `[*]`)."""
    return [
        peak_rate(node) if key == LEARNING_RATE and is_optimizer_block(node) else node[key]
        for _, node, key in _targets(copy.deepcopy(full), full, path)
    ]


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def peak_rate(block: dict[str, Any]) -> float:
    """The highest learning rate an optimizer block (with defaults filled in) reaches."""
    schedule = block.get("learning_rate")
    if not schedule:
        algorithm = next(block[a] for a in ALGORITHMS if block.get(a) is not None)
        return float(algorithm["lr"])
    if schedule.get("constant") is not None:
        return float(schedule["constant"])
    if schedule.get("piecewise_constant"):
        return float(max(schedule["piecewise_constant"]["learning_rate_values"]))
    ramp = schedule.get("linear_ramp_to_constant") or schedule.get("linear_ramp_to_cosine")
    return float(ramp["learning_rate"])


def set_peak_rate(raw: dict[str, Any], full: dict[str, Any], rate: float) -> None:
    """Scale every rate of an optimizer block so its peak becomes `rate`."""
    old = peak_rate(full)
    scale = rate / old if old > 0 else 0.0
    for algorithm in ALGORITHMS:
        if isinstance(raw.get(algorithm), dict):
            raw[algorithm]["lr"] = rate
    schedule = raw.get("learning_rate")
    if not isinstance(schedule, dict):
        return
    if schedule.get("constant") is not None:
        schedule["constant"] = rate
    if piecewise := schedule.get("piecewise_constant"):
        values = piecewise["learning_rate_values"]
        piecewise["learning_rate_values"] = [v * scale if scale else rate for v in values]
    for kind in ("linear_ramp_to_constant", "linear_ramp_to_cosine"):
        if ramp := schedule.get(kind):
            ramp["learning_rate"] = rate
            if "final_learning_rate" in ramp:
                ramp["final_learning_rate"] = ramp["final_learning_rate"] * scale
