"""Deterministic synthetic heterogeneous graph shaped like Twitter's engagement graph.

Real TwHIN data is private, so local training runs and quality checks need a stand-in with
the properties that matter to embedding quality: several entity tables, typed relations,
power-law degrees and planted community structure that a good embedding should recover.

Usage::

    python -m tml.projects.twhin.data.synthetic --out DIR [--seed S] [sizes]
    python -m tml.projects.twhin.data.synthetic --out DIR --schema homogeneous --num-entities N

The default schema is Twitter-like (user, tweet, advertiser); `homogeneous` has one entity table
and four relations on it, the shape of PyTorch-BigGraph's throughput benchmark (`make bench`).

Output under DIR:

* ``train/part-NNNNN.parquet`` and ``validation/part-NNNNN.parquet`` with int64 columns
  ``lhs``, ``rel``, ``rhs`` (``rel`` indexes :data:`RELATIONS`);
* ``communities.parquet`` with columns ``table``, ``id``, ``community`` (ground truth);
* ``graph.json`` describing table sizes, relations and edge counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
LHS_ZIPF_ALPHA = 0.8
"""Milder skew for the acting side: active users are skewed, but less than celebrities."""
RHS_ZIPF_ALPHA = 1.0
"""Classic Zipf skew for the receiving side (followed accounts, viral tweets)."""
MAX_SELF_LOOP_RESAMPLES = 8

EDGE_SCHEMA = pa.schema([("lhs", pa.int64()), ("rel", pa.int64()), ("rhs", pa.int64())])
COMMUNITY_SCHEMA = pa.schema(
    [("table", pa.string()), ("id", pa.int64()), ("community", pa.int64())]
)
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "snappy", "write_statistics": True}


class OutputExistsError(FileExistsError):
    """Raised when the output directory is non-empty and overwriting was not requested."""


@dataclass
class _TableSampler:
    """Precomputed sampling structures for one entity table.

    Sampling by inverse CDF (``searchsorted`` on cumulative weights) keeps edge generation
    vectorised. For within-community sampling, entities are laid out sorted by community so
    each community owns a contiguous slice of one cumulative array; a uniform draw inside
    that slice's mass range selects a member proportionally to its popularity.
    """

    size: int
    community: np.ndarray  # int64[size]
    lhs_cdf: np.ndarray  # float64[size], cumulative lhs weights in id order
    rhs_cdf: np.ndarray  # float64[size], cumulative rhs weights in id order
    by_community: np.ndarray  # int64[size], ids sorted by community
    community_cdf: np.ndarray  # float64[size], cumulative rhs weights in by_community order
    offsets: np.ndarray  # int64[C + 1], slice bounds of each community in by_community
    mass_start: np.ndarray  # float64[C], cumulative mass before each community
    mass_end: np.ndarray  # float64[C], cumulative mass at the end of each community

    @classmethod
    def build(cls, size: int, num_communities: int, rng: np.random.Generator) -> _TableSampler:
        """Assign random communities and scattered Zipf popularities to ``size`` entities."""
        community = rng.integers(0, num_communities, size=size, dtype=np.int64)
        lhs_rank = rng.permutation(size)
        rhs_rank = rng.permutation(size)
        lhs_weight = (lhs_rank + 1.0) ** -LHS_ZIPF_ALPHA
        rhs_weight = (rhs_rank + 1.0) ** -RHS_ZIPF_ALPHA

        by_community = np.argsort(community, kind="stable").astype(np.int64)
        community_cdf = np.cumsum(rhs_weight[by_community])
        counts = np.bincount(community, minlength=num_communities)
        offsets = np.zeros(num_communities + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        padded_cdf = np.concatenate(([0.0], community_cdf))
        return cls(
            size=size,
            community=community,
            lhs_cdf=np.cumsum(lhs_weight),
            rhs_cdf=np.cumsum(rhs_weight),
            by_community=by_community,
            community_cdf=community_cdf,
            offsets=offsets,
            mass_start=padded_cdf[offsets[:-1]],
            mass_end=padded_cdf[offsets[1:]],
        )

    @staticmethod
    def _draw(cdf: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` indices proportionally to the weights behind ``cdf``."""
        idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        return np.minimum(idx, len(cdf) - 1).astype(np.int64)

    def sample_lhs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Ids chosen by lhs popularity over the whole table."""
        return self._draw(self.lhs_cdf, n, rng)

    def sample_rhs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Ids chosen by rhs popularity over the whole table."""
        return self._draw(self.rhs_cdf, n, rng)

    def sample_rhs_in(self, communities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Ids chosen by rhs popularity restricted to the given community per draw.

        A community with no members in this table falls back to the whole table, so tiny
        tables with many communities still produce valid edges.
        """
        n = len(communities)
        u = rng.random(n)
        start = self.mass_start[communities]
        end = self.mass_end[communities]
        pos = np.searchsorted(self.community_cdf, start + u * (end - start), side="right")
        lo = self.offsets[communities]
        hi = self.offsets[communities + 1] - 1
        empty = hi < lo
        pos = np.clip(pos, lo, np.maximum(hi, lo))
        pos = np.minimum(pos, self.size - 1)
        ids = self.by_community[pos]
        if empty.any():
            ids[empty] = self.sample_rhs(int(empty.sum()), rng)
        return ids


class _RollingParquetWriter:
    """Writes edges into ``part-NNNNN.parquet`` files of exactly ``rows_per_file`` rows.

    Buffering at most one file's worth keeps memory bounded regardless of the edge count.
    """

    def __init__(self, directory: str, rows_per_file: int, row_group_size: int) -> None:
        self.directory = directory
        self.rows_per_file = rows_per_file
        self.row_group_size = row_group_size
        self.num_files = 0
        self.num_rows = 0
        self._buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._buffered = 0
        os.makedirs(directory)

    def append(self, lhs: np.ndarray, rel: np.ndarray, rhs: np.ndarray) -> None:
        """Queue edges, flushing full files as they fill up."""
        if len(lhs) == 0:
            return
        self._buffer.append((lhs, rel, rhs))
        self._buffered += len(lhs)
        while self._buffered >= self.rows_per_file:
            self._flush(self.rows_per_file)

    def close(self) -> None:
        """Write the remainder; always leave at least one (possibly empty) file."""
        if self._buffered > 0 or self.num_files == 0:
            self._flush(self._buffered)

    def _flush(self, n: int) -> None:
        cols = [np.concatenate([b[i] for b in self._buffer]) for i in range(3)]
        table = pa.Table.from_arrays(
            [pa.array(c[:n], type=pa.int64()) for c in cols], schema=EDGE_SCHEMA
        )
        path = os.path.join(self.directory, f"part-{self.num_files:05d}.parquet")
        pq.write_table(table, path, row_group_size=self.row_group_size, **_PARQUET_OPTIONS)
        self.num_files += 1
        self.num_rows += n
        rest = [c[n:] for c in cols]
        self._buffered = len(rest[0])
        self._buffer = [(rest[0], rest[1], rest[2])] if self._buffered else []


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


def _check_out_dir(out_dir: str, overwrite: bool) -> None:
    """Refuse to clobber existing results unless asked to."""
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise OutputExistsError(f"output path {out_dir} exists and is not a directory")
        if os.listdir(out_dir) and not overwrite:
            raise OutputExistsError(
                f"output directory {out_dir} is not empty; pass --overwrite to replace it"
            )


def _validate(sizes: dict[str, int], schema: GraphSchema, **params: Any) -> None:
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


def _generate_chunk(
    n: int,
    schema: GraphSchema,
    mix: np.ndarray,
    samplers: dict[str, _TableSampler],
    in_community: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``n`` i.i.d. edges; i.i.d. draws mean the output is already shuffled."""
    rel = rng.choice(len(schema.relations), size=n, p=mix).astype(np.int64)
    lhs = np.empty(n, dtype=np.int64)
    rhs = np.empty(n, dtype=np.int64)
    for r, (_, lhs_table, rhs_table) in enumerate(schema.relations):
        rows = np.flatnonzero(rel == r)
        if len(rows) == 0:
            continue
        ls, rs = samplers[lhs_table], samplers[rhs_table]
        lhs_ids = ls.sample_lhs(len(rows), rng)
        rhs_ids = _sample_rhs(lhs_ids, ls, rs, in_community, rng)
        if lhs_table == rhs_table:
            rhs_ids = _remove_self_loops(lhs_ids, rhs_ids, ls, rs, in_community, rng)
        lhs[rows] = lhs_ids
        rhs[rows] = rhs_ids
    return lhs, rel, rhs


def _sample_rhs(
    lhs_ids: np.ndarray,
    ls: _TableSampler,
    rs: _TableSampler,
    in_community: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Pick rhs ids: inside the lhs entity's community with prob ``in_community``."""
    n = len(lhs_ids)
    stay = rng.random(n) < in_community
    out = rs.sample_rhs(n, rng)
    if stay.any():
        out[stay] = rs.sample_rhs_in(ls.community[lhs_ids[stay]], rng)
    return out


def _remove_self_loops(
    lhs_ids: np.ndarray,
    rhs_ids: np.ndarray,
    ls: _TableSampler,
    rs: _TableSampler,
    in_community: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Resample self loops a few times, then shift leftovers to a random other id.

    Resampling keeps the community/popularity distribution; the shift is a guaranteed-finite
    fallback for pathological cases such as a one-member community.
    """
    rhs_ids = rhs_ids.copy()
    for _ in range(MAX_SELF_LOOP_RESAMPLES):
        bad = np.flatnonzero(rhs_ids == lhs_ids)
        if len(bad) == 0:
            return rhs_ids
        rhs_ids[bad] = _sample_rhs(lhs_ids[bad], ls, rs, in_community, rng)
    bad = np.flatnonzero(rhs_ids == lhs_ids)
    if len(bad):
        shift = rng.integers(1, rs.size, size=len(bad))
        rhs_ids[bad] = (lhs_ids[bad] + shift) % rs.size
    return rhs_ids


def _write_communities(path: str, samplers: dict[str, _TableSampler]) -> None:
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
    pq.write_table(pa.Table.from_arrays(arrays, schema=COMMUNITY_SCHEMA), path, **_PARQUET_OPTIONS)


def _publish(tmp_dir: str, out_dir: str, overwrite: bool) -> None:
    """Move the finished directory into place so readers never see a partial graph."""
    _check_out_dir(out_dir, overwrite)
    if os.path.isdir(out_dir):
        parent = os.path.dirname(out_dir)
        trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
        old = os.path.join(trash, "old")
        os.rename(out_dir, old)
        os.rename(tmp_dir, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp_dir, out_dir)


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
    _validate(
        sizes,
        graph_schema,
        seed=seed,
        num_edges=num_edges,
        num_communities=num_communities,
        in_community=in_community,
        validation_fraction=validation_fraction,
        rows_per_file=rows_per_file,
        row_group_size=row_group_size,
    )
    mix = parse_relation_mix(
        graph_schema.relation_mix if relation_mix is None else relation_mix,
        len(graph_schema.relations),
    )
    out_dir = os.path.abspath(out_dir)
    _check_out_dir(out_dir, overwrite)

    # Independent streams per purpose so e.g. the split draw never shifts the graph itself.
    structure_ss, split_ss, edge_ss = np.random.SeedSequence(seed).spawn(3)
    structure_rng = np.random.default_rng(structure_ss)
    samplers = {
        t: _TableSampler.build(sizes[t], num_communities, structure_rng)
        for t in graph_schema.tables
    }

    num_validation = min(num_edges - 1, max(1, round(validation_fraction * num_edges)))
    is_validation = np.zeros(num_edges, dtype=bool)
    split_rng = np.random.default_rng(split_ss)
    is_validation[split_rng.choice(num_edges, size=num_validation, replace=False)] = True

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    # Not mkdtemp: its 0700 mode would survive the rename; os.mkdir honours the umask.
    tmp_dir = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{uuid.uuid4().hex}")
    os.mkdir(tmp_dir)
    try:
        train = _RollingParquetWriter(os.path.join(tmp_dir, "train"), rows_per_file, row_group_size)
        valid = _RollingParquetWriter(
            os.path.join(tmp_dir, "validation"), rows_per_file, row_group_size
        )
        edge_rng = np.random.default_rng(edge_ss)
        for start in range(0, num_edges, rows_per_file):
            n = min(rows_per_file, num_edges - start)
            lhs, rel, rhs = _generate_chunk(n, graph_schema, mix, samplers, in_community, edge_rng)
            v = is_validation[start : start + n]
            t = ~v
            train.append(lhs[t], rel[t], rhs[t])
            valid.append(lhs[v], rel[v], rhs[v])
        train.close()
        valid.close()

        _write_communities(os.path.join(tmp_dir, "communities.parquet"), samplers)
        graph = {
            "tables": dict(sizes),
            "schema": schema,
            "relations": [
                {"name": n, "lhs": lt, "rhs": rt} for n, lt, rt in graph_schema.relations
            ],
            "num_train_edges": train.num_rows,
            "num_validation_edges": valid.num_rows,
            "seed": seed,
            "num_communities": num_communities,
        }
        with open(os.path.join(tmp_dir, "graph.json"), "w") as f:
            json.dump(graph, f, indent=2)
            f.write("\n")
        _publish(tmp_dir, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return graph


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tml.projects.twhin.data.synthetic",
        description="Write a deterministic synthetic Twitter-like heterogeneous graph.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory to create")
    p.add_argument(
        "--schema",
        choices=sorted(SCHEMAS),
        default="twitter",
        help="tables and relations: twitter (user, tweet, advertiser; default) or homogeneous "
        "(one entity table, 4 relations: PyTorch-BigGraph's benchmark shape)",
    )
    p.add_argument(
        "--num-entities",
        type=int,
        default=1_000_000,
        help="entities of the homogeneous schema (default: 1000000)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--num-users", type=int, default=20000, help="user entities (default: 20000)")
    p.add_argument("--num-tweets", type=int, default=40000, help="tweet entities (default: 40000)")
    p.add_argument(
        "--num-advertisers", type=int, default=1000, help="advertiser entities (default: 1000)"
    )
    p.add_argument(
        "--num-edges",
        type=int,
        default=400000,
        help="total edges, train plus validation (default: 400000)",
    )
    p.add_argument(
        "--num-communities", type=int, default=20, help="planted communities (default: 20)"
    )
    p.add_argument(
        "--in-community",
        type=float,
        default=0.9,
        help="probability an edge stays inside the lhs entity's community (default: 0.9)",
    )
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.02,
        help="fraction of edges held out for validation, at least 1 edge (default: 0.02)",
    )
    p.add_argument(
        "--rows-per-file",
        type=int,
        default=100000,
        help="edges per parquet file; also the generation chunk size (default: 100000)",
    )
    p.add_argument(
        "--row-group-size", type=int, default=20000, help="parquet row group size (default: 20000)"
    )
    p.add_argument(
        "--relation-mix",
        default=None,
        help="relative frequencies of the relations, comma-separated (default: the schema's, "
        "0.4,0.3,0.2,0.1 for twitter's follows,fav,retweet,click; 0.5,0.3,0.15,0.05 for "
        "homogeneous)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace DIR if it exists and is not empty"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (2 on bad input or existing output)."""
    args = _build_parser().parse_args(argv)
    try:
        graph = generate(
            args.out,
            schema=args.schema,
            num_entities=args.num_entities,
            seed=args.seed,
            num_users=args.num_users,
            num_tweets=args.num_tweets,
            num_advertisers=args.num_advertisers,
            num_edges=args.num_edges,
            num_communities=args.num_communities,
            in_community=args.in_community,
            validation_fraction=args.validation_fraction,
            rows_per_file=args.rows_per_file,
            row_group_size=args.row_group_size,
            relation_mix=args.relation_mix,
            overwrite=args.overwrite,
        )
    except (OutputExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote synthetic graph to {os.path.abspath(args.out)}: "
        f"{graph['num_train_edges']} train edges, "
        f"{graph['num_validation_edges']} validation edges"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
