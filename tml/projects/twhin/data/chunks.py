"""How a batch's positives are cut into chunks: shared by the batch builder and the scorer.

A relation's positives in a batch (contiguous, the batch is grouped by relation) are cut into
chunks of K + 1 (K = in_batch_negatives; the last one may be shorter), or form one chunk when
there are fewer. In-batch negatives pair the positives of a chunk; with
`global_negatives_per_chunk` each chunk also draws its own uniform negatives. Plain Python, so the scorer needs no data-side imports.
"""

from __future__ import annotations


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
