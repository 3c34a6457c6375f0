"""The slot layout of a batch and the chunk rule (see the package docstring); plain Python."""

from __future__ import annotations

from dataclasses import dataclass

# -- the chunk rule ------------------------------------------------------------------------------


def chunk_size(count: int, in_batch_negatives: int) -> int:
    """Positives per chunk for a relation with `count` positives in the batch (count > 0)."""
    return min(in_batch_negatives + 1, count)


def chunk_groups(count: int, in_batch_negatives: int) -> list[tuple[int, int]]:
    """`(positives, chunk size)` of a relation's full chunks, then of its shorter last chunk if
    any: the scorer takes each group as a batch of equal chunks, so nothing is padded."""
    if count == 0:
        return []
    chunk = chunk_size(count, in_batch_negatives)
    full = count // chunk * chunk
    return [(full, chunk)] + ([(count - full, count - full)] if count > full else [])


def chunks_per_relation(counts: list[int], in_batch_negatives: int) -> list[int]:
    """Number of chunks of each relation (0 for a relation without positives), counted from
    `chunk_groups` so the builder draws negatives for exactly the chunks the scorer scores."""
    return [
        sum(rows // chunk for rows, chunk in chunk_groups(count, in_batch_negatives))
        for count in counts
    ]


def max_chunks(batch_size: int, in_batch_negatives: int, num_relations: int) -> int:
    """Most chunks any batch can have (each relation adds at most one partial chunk)."""
    return -(-batch_size // (in_batch_negatives + 1)) + num_relations


# -- what the slots are ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphShape:
    """The tables a batch looks up (its KJT keys, in this order) and the relations it holds."""

    table_names: tuple[str, ...]
    table_sizes: tuple[int, ...]  # rows of each table
    relation_tables: tuple[tuple[int, int], ...]  # (lhs, rhs) table index of each relation

    @property
    def relation_table_sizes(self) -> list[tuple[int, int]]:
        """(lhs rows, rhs rows) of each relation: the id ranges its edges must lie in."""
        return [(self.table_sizes[lhs], self.table_sizes[rhs]) for lhs, rhs in self.relation_tables]


@dataclass(frozen=True)
class ChunkGroup:
    """Consecutive positives of one relation scored together: `rows` positives in equal chunks."""

    relation: int
    rows: int
    chunk: int

    @property
    def num_chunks(self) -> int:
        return self.rows // self.chunk


@dataclass(frozen=True)
class SlotPieces:
    """How a batch's lookups split into pieces: `split_sizes` cuts each table's output (one
    split, whose backward is one concatenation), and the `*_piece` methods say which piece holds
    what for group g of `groups`."""

    groups: tuple[ChunkGroup, ...]
    split_sizes: tuple[int, ...]
    per_chunk: bool  # uniform negatives: one piece per group (per chunk) or per relation
    num_negative_pieces: int

    def lhs_piece(self, group: int) -> int:
        return group

    def rhs_piece(self, group: int) -> int:
        return len(self.groups) + 1 + group  # after the lhs pieces and the padding

    def lhs_negatives_piece(self, group: int) -> int:
        owner = group if self.per_chunk else self.groups[group].relation
        return 2 * (len(self.groups) + 1) + owner

    def rhs_negatives_piece(self, group: int) -> int:
        return self.lhs_negatives_piece(group) + self.num_negative_pieces


@dataclass(frozen=True)
class SlotLayout:
    """The sizes that fix the slot layout, shared by the batch builder and the scorer."""

    batch_size: int  # B
    global_negatives: int  # G
    in_batch_negatives: int  # K
    num_relations: int  # R
    global_negatives_per_chunk: bool = False

    @property
    def num_owners(self) -> int:
        """Relations, or the most chunks a batch can have, each drawing 2G negatives."""
        if not self.global_negatives_per_chunk:
            return self.num_relations
        return max_chunks(self.batch_size, self.in_batch_negatives, self.num_relations)

    @property
    def num_slots(self) -> int:
        return 2 * self.batch_size + 2 * self.global_negatives * self.num_owners

    def lhs_negative_slots(self, owner: int) -> slice:
        start = 2 * self.batch_size + self.global_negatives * owner
        return slice(start, start + self.global_negatives)

    def rhs_negative_slots(self, owner: int) -> slice:
        start = 2 * self.batch_size + self.global_negatives * (self.num_owners + owner)
        return slice(start, start + self.global_negatives)

    def relation_counts(self, relation_offsets: tuple[int, ...]) -> list[int]:
        """Positives of each relation in a batch with these offsets."""
        return [relation_offsets[r + 1] - relation_offsets[r] for r in range(self.num_relations)]

    def owners_per_relation(self, counts: list[int]) -> list[int]:
        """Owners of uniform negatives that each relation's positives fill in a batch."""
        if self.global_negatives_per_chunk:
            return chunks_per_relation(counts, self.in_batch_negatives)
        return [1] * self.num_relations

    def pieces(self, relation_offsets: tuple[int, ...]) -> SlotPieces:
        """The pieces of a batch with these offsets: [lhs of each group (relation 0's full
        chunks, its last chunk, relation 1's ...), padding, rhs of each group, padding, lhs
        negatives of each owner, unused owners, rhs negatives likewise, unused owners]."""
        counts = self.relation_counts(relation_offsets)
        groups = tuple(
            ChunkGroup(relation, rows, chunk)
            for relation, count in enumerate(counts)
            for rows, chunk in chunk_groups(count, self.in_batch_negatives)
        )
        size = self.global_negatives
        if self.global_negatives_per_chunk:
            negatives = [size * group.num_chunks for group in groups]
        else:
            negatives = [size] * self.num_relations
        negatives.append(size * self.num_owners - sum(negatives))  # unused owners
        positives = [group.rows for group in groups]
        padding = self.batch_size - relation_offsets[-1]
        return SlotPieces(
            groups=groups,
            split_sizes=(*positives, padding, *positives, padding, *negatives, *negatives),
            per_chunk=self.global_negatives_per_chunk,
            num_negative_pieces=len(negatives),
        )
