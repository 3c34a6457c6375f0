"""The slot layout of a batch, the chunk rule and the order of positives (see the package
docstring); plain Python and numpy, no TorchRec."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# -- the chunk rule ------------------------------------------------------------------------------


def chunk_size(count: int, in_batch_negatives: int) -> int:
    """Positives per chunk for a relation with `count` positives in the batch (count > 0)."""
    return min(in_batch_negatives + 1, count)


def chunk_groups(count: int, in_batch_negatives: int) -> list[tuple[int, int]]:
    """`(positives, chunk size)` of a relation's full chunks, then of its shorter last chunk if
    any (the rule `SlotLayout.pieces` applies to every relation at once)."""
    if count == 0:
        return []
    chunk = chunk_size(count, in_batch_negatives)
    full = count // chunk * chunk
    return [(full, chunk)] + ([(count - full, count - full)] if count > full else [])


def max_chunks(batch_size: int, in_batch_negatives: int, num_relations: int) -> int:
    """Most chunks any batch can have: each relation present adds at most one shorter chunk, and
    n relations present make at most (B + K n) / (K + 1) chunks (n <= B)."""
    present = min(num_relations, batch_size)
    return (batch_size + in_batch_negatives * present) // (in_batch_negatives + 1)


def first_appearance(keys: Sequence[Hashable]) -> tuple[int, ...]:
    """Each key's number, counted in order of first appearance: (a, b, a) -> (0, 1, 0)."""
    numbers: dict[Hashable, int] = {}
    return tuple(numbers.setdefault(key, len(numbers)) for key in keys)


# -- what the slots are ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphShape:
    """The tables a batch looks up (its KJT keys, in this order) and the relations it holds."""

    table_names: tuple[str, ...]
    table_sizes: tuple[int, ...]  # rows of each table
    relation_tables: tuple[tuple[int, int], ...]  # (lhs, rhs) table index of each relation
    # Scoring group of each relation: relations scored together (the model's choice: same
    # operator kind and tables). Default: one group per (lhs, rhs) table pair.
    relation_groups: tuple[int, ...] = ()

    @property
    def relation_table_sizes(self) -> list[tuple[int, int]]:
        """(lhs rows, rhs rows) of each relation: the id ranges its edges must lie in."""
        return [(self.table_sizes[lhs], self.table_sizes[rhs]) for lhs, rhs in self.relation_tables]

    @cached_property
    def groups(self) -> tuple[int, ...]:
        return self.relation_groups or first_appearance(self.relation_tables)

    @cached_property
    def group_tables(self) -> tuple[tuple[int, int], ...]:
        """(lhs, rhs) table index of each scoring group (its relations share them)."""
        tables: dict[int, tuple[int, int]] = {}
        for group, pair in zip(self.groups, self.relation_tables, strict=True):
            if tables.setdefault(group, pair) != pair:
                raise ValueError(f"scoring group {group} mixes the table pairs {tables[group]} "
                                 f"and {pair}")  # fmt: skip
        return tuple(tables[group] for group in range(len(tables)))


@dataclass(frozen=True)
class Bucket:
    """Chunks of one scoring group with the same width: rows [start, stop) of the batch hold
    `num_chunks` chunks of `width` positives, each chunk from one relation; its chunks are the
    batch's chunks [first_chunk, first_chunk + num_chunks)."""

    group: int
    width: int
    num_chunks: int
    start: int
    first_chunk: int

    @property
    def stop(self) -> int:
        return self.start + self.num_chunks * self.width


@dataclass(frozen=True)
class SlotPieces:
    """How a batch's lookups split into pieces: `split_sizes` cuts each table's output (one
    split, whose backward is one concatenation); bucket b's positives are pieces `b` (lhs) and
    `len(buckets) + 1 + b` (rhs), its uniform negatives pieces `lhs_negatives[b]` and
    `rhs_negatives[b]`."""

    buckets: tuple[Bucket, ...]
    split_sizes: tuple[int, ...]
    lhs_negatives: tuple[int, ...]
    rhs_negatives: tuple[int, ...]
    per_chunk: bool  # uniform negatives per chunk `(chunks * G, d)`, else per table `(G, d)`
    num_real: int  # positives that are real edges (the rest is padding)

    def lhs_piece(self, bucket: int) -> int:
        return bucket

    def rhs_piece(self, bucket: int) -> int:
        return len(self.buckets) + 1 + bucket  # after the lhs pieces and the padding


@dataclass(frozen=True)
class SlotLayout:
    """The sizes and relations that fix the slot layout, shared by the builder and the scorer."""

    graph: GraphShape
    batch_size: int  # B
    global_negatives: int  # G
    in_batch_negatives: int  # K
    global_negatives_per_chunk: bool = False

    @property
    def num_relations(self) -> int:
        return len(self.graph.relation_tables)

    @cached_property
    def lhs_tables(self) -> tuple[int, ...]:
        """Tables some relation takes its lhs from: each draws G lhs negatives per batch."""
        return tuple(sorted({lhs for lhs, _ in self.graph.relation_tables}))

    @cached_property
    def rhs_tables(self) -> tuple[int, ...]:
        return tuple(sorted({rhs for _, rhs in self.graph.relation_tables}))

    @property
    def num_owners(self) -> tuple[int, int]:
        """Owners of G lhs and of G rhs negatives: tables, or the most chunks a batch can have."""
        if self.global_negatives_per_chunk:
            chunks = max_chunks(self.batch_size, self.in_batch_negatives, self.num_relations)
            return chunks, chunks
        return len(self.lhs_tables), len(self.rhs_tables)

    @property
    def num_slots(self) -> int:
        return 2 * self.batch_size + self.global_negatives * sum(self.num_owners)

    def lhs_negative_slots(self, owner: int) -> slice:
        """Slots of the lhs negatives of `owner`: a chunk, or the table `lhs_tables[owner]`."""
        start = 2 * self.batch_size + self.global_negatives * owner
        return slice(start, start + self.global_negatives)

    def rhs_negative_slots(self, owner: int) -> slice:
        start = 2 * self.batch_size + self.global_negatives * (self.num_owners[0] + owner)
        return slice(start, start + self.global_negatives)

    def _chunk_table(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per relation: its chunk width, full chunks and last (shorter) chunk's width (0: none)."""
        width = np.minimum(self.in_batch_negatives + 1, counts)
        full = np.where(counts > 0, counts // np.maximum(width, 1), 0)
        return width, full, counts - full * width

    def buckets(self, counts: np.ndarray) -> tuple[Bucket, ...]:
        """The buckets of a batch with `counts` positives per relation, in row order: scoring
        group by group, widest chunks first."""
        groups = np.asarray(self.graph.groups, np.int64)
        width, full, last = self._chunk_table(counts)
        table = np.zeros((len(self.graph.group_tables), self.in_batch_negatives + 2), np.int64)
        np.add.at(table, (groups, width), full)
        np.add.at(table, (groups, last), last > 0)
        table[:, 0] = 0
        out, start, first_chunk = [], 0, 0
        for group, column in zip(*np.nonzero(table[:, ::-1]), strict=True):
            chunk_width = table.shape[1] - 1 - int(column)
            num_chunks = int(table[group, chunk_width])
            out.append(Bucket(int(group), chunk_width, num_chunks, start, first_chunk))
            start += num_chunks * chunk_width
            first_chunk += num_chunks
        return tuple(out)

    def row_order(self, relation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(order, counts): `relation[order]` lays positives out bucket by bucket (see
        `buckets`), each chunk's positives consecutive and in their given order."""
        counts = np.bincount(relation, minlength=self.num_relations)
        by_relation = np.argsort(relation, kind="stable")
        sorted_relation = relation[by_relation]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(relation)) - starts[sorted_relation]  # place within its relation
        width, full, last = self._chunk_table(counts)
        in_full = rank < (full * width)[sorted_relation]
        row_width = np.where(in_full, width[sorted_relation], last[sorted_relation])
        groups = np.asarray(self.graph.groups, np.int64)[sorted_relation]
        # lexsort is stable: within a relation and width the positives keep their order.
        order = np.lexsort((sorted_relation, -row_width, groups))
        return by_relation[order], counts

    def pieces(self, counts: np.ndarray) -> SlotPieces:
        """The pieces of a batch with `counts` positives per relation: [lhs of each bucket,
        padding, rhs of each bucket, padding, lhs negatives of each owner (and unused owners),
        rhs negatives likewise]."""
        buckets = self.buckets(counts)
        real, size = int(counts.sum()), self.global_negatives
        first_negative = 2 * (len(buckets) + 1)
        if self.global_negatives_per_chunk:
            negatives = [size * bucket.num_chunks for bucket in buckets]
            negatives.append(size * self.num_owners[0] - sum(negatives))  # unused owners
            lhs = tuple(first_negative + b for b in range(len(buckets)))
            rhs = tuple(index + len(negatives) for index in lhs)
            negatives *= 2
        else:
            negatives = [size] * sum(self.num_owners)
            group_tables = [self.graph.group_tables[bucket.group] for bucket in buckets]
            lhs = tuple(first_negative + self.lhs_tables.index(t) for t, _ in group_tables)
            rhs = tuple(
                first_negative + len(self.lhs_tables) + self.rhs_tables.index(t)
                for _, t in group_tables
            )
        positives = [bucket.num_chunks * bucket.width for bucket in buckets]
        padding = self.batch_size - real
        return SlotPieces(
            buckets=buckets,
            split_sizes=(*positives, padding, *positives, padding, *negatives),
            lhs_negatives=lhs,
            rhs_negatives=rhs,
            per_chunk=self.global_negatives_per_chunk,
            num_real=real,
        )
