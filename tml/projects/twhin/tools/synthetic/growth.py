"""The next version of a synthetic graph: the same entities, ids and edges, plus new ones.

`grow(out, previous, new_fraction)` reads a graph written by `generate` (or by an earlier
`grow`) and writes one whose every table has `new_fraction` more entities, appended after the
old ids, each in a planted community of its own (drawn like the old ones), and whose edges are
the old edges (same order, same split) followed by `new_fraction` x the old edge count of new
edges. A new edge touches at least one new entity and is otherwise drawn like every edge of the
grown graph (relation mix, popularity, communities), so old and new entities play by the same
rules. `graph.json` records the previous sizes under `grown_from`; the same arguments always
give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tml.core.files import built_directory, check_out_dir
from tml.projects.twhin.data.files import EdgeFileWriter, list_parquet_files
from tml.projects.twhin.data.graph_files import COMMUNITIES_FILE
from tml.projects.twhin.tools.synthetic.generator import write_communities
from tml.projects.twhin.tools.synthetic.sampling import TableSampler, generate_edges
from tml.projects.twhin.tools.synthetic.schema import SCHEMAS, parse_relation_mix

SPLITS = ("train", "validation")


def _read_previous(previous: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The previous graph.json and each table's communities (by id)."""
    path = previous / "graph.json"
    if not path.is_file():
        raise ValueError(f"--grow-from {previous}: no graph.json (not a synthetic graph)")
    graph = json.loads(path.read_text())
    data = pq.read_table(previous / COMMUNITIES_FILE).to_pydict()
    tables = np.asarray(data["table"])
    communities = {}
    for table, size in graph["tables"].items():
        mine = tables == table
        labels = np.empty(size, dtype=np.int64)
        labels[np.asarray(data["id"])[mine]] = np.asarray(data["community"])[mine]
        communities[table] = labels
    return graph, communities


def grow(
    out_dir: str,
    previous: str,
    *,
    new_fraction: float,
    seed: int = 0,
    in_community: float = 0.9,
    rows_per_file: int = 100000,
    row_group_size: int = 20000,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the grown graph into `out_dir`; return its graph.json dict (see the docstring)."""
    if not 0.0 < new_fraction <= 10.0:
        raise ValueError(f"--new-fraction must be in (0, 10], got {new_fraction}")
    graph, communities = _read_previous(Path(previous))
    schema = SCHEMAS[graph.get("schema", "twitter")]
    num_communities = graph["num_communities"]
    old_sizes = dict(graph["tables"])
    rng = np.random.default_rng([graph["seed"], seed, 17])  # 17: the growth stream
    samplers = {}
    for table, labels in communities.items():
        added = max(1, round(new_fraction * len(labels)))
        fresh = rng.integers(0, num_communities, size=added, dtype=np.int64)
        samplers[table] = TableSampler.with_communities(
            np.concatenate([labels, fresh]), num_communities, rng
        )
    old_edges = graph["num_train_edges"] + graph["num_validation_edges"]
    num_new = max(2, round(new_fraction * old_edges))
    mix = parse_relation_mix(schema.relation_mix, len(schema.relations))
    lhs, rel, rhs = _new_edges(num_new, schema, mix, samplers, old_sizes, in_community, rng)
    is_validation = rng.random(num_new) < graph["num_validation_edges"] / old_edges
    out = Path(out_dir).absolute()
    check_out_dir(out, overwrite)
    with built_directory(out, overwrite) as staging:
        rows = {}
        for split, mask in zip(SPLITS, (~is_validation, is_validation), strict=True):
            writer = EdgeFileWriter(staging / split, rows_per_file, row_group_size)
            _, files = list_parquet_files(str(Path(previous) / split))
            for file in files:
                old = pq.read_table(file)
                writer.append(*(old.column(c).to_numpy() for c in ("lhs", "rel", "rhs")))
            writer.append(lhs[mask], rel[mask], rhs[mask])
            writer.close()
            rows[split] = writer.num_rows
        write_communities(staging / COMMUNITIES_FILE, samplers)
        grown = {
            **graph,
            "tables": {table: s.size for table, s in samplers.items()},
            "num_train_edges": rows["train"],
            "num_validation_edges": rows["validation"],
            "grown_from": {"path": str(Path(previous).absolute()), "tables": old_sizes,
                           "new_fraction": new_fraction, "seed": seed},
        }  # fmt: skip
        (staging / "graph.json").write_text(json.dumps(grown, indent=2) + "\n")
    return grown


def _new_edges(
    count: int,
    schema: Any,
    mix: np.ndarray,
    samplers: dict[str, TableSampler],
    old_sizes: dict[str, int],
    in_community: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` edges of the grown graph that touch a new entity (drawn, then kept)."""
    lhs_table = np.array([old_sizes[lt] for _, lt, _ in schema.relations])
    rhs_table = np.array([old_sizes[rt] for _, _, rt in schema.relations])
    kept: list[tuple[np.ndarray, ...]] = []
    total = 0
    while total < count:
        lhs, rel, rhs = generate_edges(4 * count, schema, mix, samplers, in_community, rng)
        new = (lhs >= lhs_table[rel]) | (rhs >= rhs_table[rel])
        kept.append((lhs[new], rel[new], rhs[new]))
        total += int(new.sum())
    lhs, rel, rhs = (np.concatenate(parts)[:count] for parts in zip(*kept, strict=True))
    return lhs, rel, rhs
