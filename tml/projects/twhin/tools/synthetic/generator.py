"""Deterministic synthetic heterogeneous graph shaped like Twitter's engagement graph.

Real TwHIN data is private, so local training runs and quality checks need a stand-in with
the properties that matter to embedding quality: several entity tables, typed relations,
power-law degrees and planted community structure that a good embedding should recover.

Usage::

    python -m tml.projects.twhin.synthetic --out DIR [--seed S] [sizes]
    python -m tml.projects.twhin.synthetic --out DIR --schema homogeneous --num-entities N

The default schema is Twitter-like (user, tweet, advertiser); `homogeneous` has one entity table
and four relations on it, the shape of PyTorch-BigGraph's throughput benchmark (`make bench`).

Output under DIR:

* ``train/part-NNNNN.parquet`` and ``validation/part-NNNNN.parquet`` with int64 columns
  ``lhs``, ``rel``, ``rhs`` (``rel`` indexes :data:`RELATIONS`);
* ``communities.parquet`` with columns ``table``, ``id``, ``community`` (ground truth);
* ``graph.json`` describing table sizes, relations and edge counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tml.core.files import built_directory, check_out_dir
from tml.projects.twhin.data.files import PARQUET_OPTIONS, EdgeFileWriter
from tml.projects.twhin.data.graph_files import COMMUNITIES_FILE
from tml.projects.twhin.tools.synthetic.sampling import TableSampler, generate_edges
from tml.projects.twhin.tools.synthetic.schema import SCHEMAS, parse_relation_mix, validate

COMMUNITY_SCHEMA = pa.schema(
    [("table", pa.string()), ("id", pa.int64()), ("community", pa.int64())]
)


def write_communities(path: Path, samplers: dict[str, TableSampler]) -> None:
    """Write ground-truth communities so quality checks can score the embeddings."""
    names, ids, comms = [], [], []
    for table, s in samplers.items():
        names.extend([table] * s.size)
        ids.append(np.arange(s.size, dtype=np.int64))
        comms.append(s.community)
    arrays = [
        pa.array(names, type=pa.string()),
        pa.array(np.concatenate(ids), type=pa.int64()),
        pa.array(np.concatenate(comms), type=pa.int64()),
    ]
    pq.write_table(pa.Table.from_arrays(arrays, schema=COMMUNITY_SCHEMA), path, **PARQUET_OPTIONS)


def generate(
    out_dir: str,
    *,
    schema: str = "twitter",
    num_entities: int = 1_000_000,
    seed: int = 0,
    num_users: int = 20000,
    num_tweets: int = 40000,
    num_advertisers: int = 1000,
    num_edges: int = 400000,
    num_communities: int = 20,
    in_community: float = 0.9,
    validation_fraction: float = 0.02,
    rows_per_file: int = 100000,
    row_group_size: int = 20000,
    relation_mix: str | Sequence[float] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate the synthetic graph into ``out_dir`` and return the ``graph.json`` dict.

    ``schema`` picks the tables and relations (:data:`SCHEMAS`): "twitter" sizes its tables with
    ``num_users``, ``num_tweets`` and ``num_advertisers``; "homogeneous" has one table of
    ``num_entities``. ``relation_mix`` defaults to the schema's.

    Raises :class:`OutputExistsError` if ``out_dir`` is non-empty and ``overwrite`` is false,
    and :class:`ValueError` for invalid sizes or probabilities. The same arguments always
    produce byte-identical files.
    """
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; choose one of {', '.join(SCHEMAS)}")
    graph_schema = SCHEMAS[schema]
    if schema == "twitter":
        sizes = {"user": num_users, "tweet": num_tweets, "advertiser": num_advertisers}
    else:
        sizes = {table: num_entities for table in graph_schema.tables}
    validate(
        sizes, graph_schema, seed=seed, num_edges=num_edges, num_communities=num_communities,
        in_community=in_community, validation_fraction=validation_fraction,
        rows_per_file=rows_per_file, row_group_size=row_group_size,
    )  # fmt: skip
    mix = parse_relation_mix(
        graph_schema.relation_mix if relation_mix is None else relation_mix,
        len(graph_schema.relations),
    )
    out = Path(out_dir).absolute()
    check_out_dir(out, overwrite)

    # Independent streams per purpose so e.g. the split draw never shifts the graph itself.
    structure_ss, split_ss, edge_ss = np.random.SeedSequence(seed).spawn(3)
    structure_rng = np.random.default_rng(structure_ss)
    samplers = {
        t: TableSampler.build(sizes[t], num_communities, structure_rng) for t in graph_schema.tables
    }
    num_validation = min(num_edges - 1, max(1, round(validation_fraction * num_edges)))
    is_validation = np.zeros(num_edges, dtype=bool)
    split_rng = np.random.default_rng(split_ss)
    is_validation[split_rng.choice(num_edges, size=num_validation, replace=False)] = True

    with built_directory(out, overwrite) as staging:
        edge_rng = np.random.default_rng(edge_ss)
        split_rows = _write_edges(
            staging, is_validation, rows_per_file, row_group_size,
            lambda n: generate_edges(n, graph_schema, mix, samplers, in_community, edge_rng),
        )  # fmt: skip
        write_communities(staging / COMMUNITIES_FILE, samplers)
        graph = {
            "tables": dict(sizes),
            "schema": schema,
            "relations": [
                {"name": n, "lhs": lt, "rhs": rt} for n, lt, rt in graph_schema.relations
            ],
            "num_train_edges": split_rows["train"],
            "num_validation_edges": split_rows["validation"],
            "seed": seed,
            "num_communities": num_communities,
        }
        (staging / "graph.json").write_text(json.dumps(graph, indent=2) + "\n")
    return graph


def _write_edges(
    staging: Path,
    is_validation: np.ndarray,
    rows_per_file: int,
    row_group_size: int,
    draw: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> dict[str, int]:
    """Draw the edges a file's worth at a time into train/ and validation/; rows of each."""
    train = EdgeFileWriter(staging / "train", rows_per_file, row_group_size)
    valid = EdgeFileWriter(staging / "validation", rows_per_file, row_group_size)
    num_edges = len(is_validation)
    for start in range(0, num_edges, rows_per_file):
        lhs, rel, rhs = draw(min(rows_per_file, num_edges - start))
        v = is_validation[start : start + len(lhs)]
        t = ~v
        train.append(lhs[t], rel[t], rhs[t])
        valid.append(lhs[v], rel[v], rhs[v])
    train.close()
    valid.close()
    return {"train": train.num_rows, "validation": valid.num_rows}
