"""Which tables and relations a synthetic graph has, how often each relation occurs, and the
checks on the generator's sizes and probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TABLES: tuple[str, ...] = ("user", "tweet", "advertiser")
"""Entity tables, in the order configs are expected to list them."""

RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("follows", "user", "user"),
    ("fav", "user", "tweet"),
    ("retweet", "user", "tweet"),
    ("click", "user", "advertiser"),
)
"""``(name, lhs_table, rhs_table)``; the position of a relation is its ``rel`` value."""

DEFAULT_RELATION_MIX: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)


@dataclass(frozen=True)
class GraphSchema:
    """Entity tables and typed relations of a synthetic graph, with the relations' frequencies."""

    tables: tuple[str, ...]
    relations: tuple[tuple[str, str, str], ...]
    relation_mix: tuple[float, ...]


SCHEMAS: dict[str, GraphSchema] = {
    "twitter": GraphSchema(TABLES, RELATIONS, DEFAULT_RELATION_MIX),
    # One entity type and four relations: the shape of PyTorch-BigGraph's throughput benchmark
    # (`make bench`), where every relation goes from and to the same table.
    "homogeneous": GraphSchema(
        ("entity",),
        tuple((f"rel{index}", "entity", "entity") for index in range(4)),
        (0.5, 0.3, 0.15, 0.05),
    ),
}


def parse_relation_mix(
    mix: str | Sequence[float], num_relations: int = len(RELATIONS)
) -> np.ndarray:
    """Turn ``"0.4,0.3,0.2,0.1"`` (or a sequence) into normalised relation probabilities."""
    if isinstance(mix, str):
        try:
            values = [float(x) for x in mix.split(",")]
        except ValueError as e:
            raise ValueError(f"relation mix must be comma-separated numbers, got {mix!r}") from e
    else:
        values = [float(x) for x in mix]
    if len(values) != num_relations:
        raise ValueError(f"relation mix needs {num_relations} values, got {len(values)}")
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0) or arr.sum() <= 0:
        raise ValueError(f"relation mix must be non-negative with a positive sum, got {values}")
    return arr / arr.sum()


def validate(sizes: dict[str, int], schema: GraphSchema, **params: Any) -> None:
    """Fail fast with a readable message instead of a numpy error deep in generation."""
    for name, n in sizes.items():
        if n < 1:
            raise ValueError(f"number of {name}s must be >= 1, got {n}")
    for relation, lhs_table, rhs_table in schema.relations:
        if lhs_table == rhs_table and sizes[lhs_table] < 2:
            raise ValueError(
                f"need at least 2 {lhs_table}s so {relation} edges can avoid self loops"
            )
    if params["seed"] < 0:
        raise ValueError(f"seed must be >= 0, got {params['seed']}")
    if params["num_edges"] < 2:
        raise ValueError("num_edges must be >= 2 (at least one train and one validation edge)")
    if params["num_communities"] < 1:
        raise ValueError("num_communities must be >= 1")
    if not 0.0 <= params["in_community"] <= 1.0:
        raise ValueError("in_community must be in [0, 1]")
    if not 0.0 <= params["validation_fraction"] < 1.0:
        raise ValueError("validation_fraction must be in [0, 1)")
    if params["rows_per_file"] < 1 or params["row_group_size"] < 1:
        raise ValueError("rows_per_file and row_group_size must be >= 1")
