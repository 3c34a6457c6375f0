"""The batch contract: what one training step carries from the data to the model.

The data side builds an `EdgeBatch` (data/builder.py) and the model scores it (models/scorer.py);
both read its layout from this module only, so the two cannot drift apart.

All embedding lookups of a step go into one KeyedJaggedTensor, one key per table of `GraphShape`
(in that order), so TorchRec can shard and pipeline them. The lookups sit in fixed *slots* (the
same count on every rank and every step, which TorchRec's all-to-alls require):

    slots [0, B)                      lhs entity of positive i
    slots [B, 2B)                     rhs entity of positive i
    slots 2B + q*G + [0, G)           uniform lhs negatives of owner q
    slots 2B + Q*G + q*G + [0, G)     uniform rhs negatives of owner q

for Q lhs owners, so each owner's lhs negatives, and its rhs ones, are one contiguous run. The
owners are the tables (the lhs owners are the tables some relation takes its lhs from, in table
order, each drawing G ids per batch from itself; the rhs owners likewise), so their number does
not grow with the relations; or, with `global_negatives_per_chunk`, the chunks of the batch in
order, each drawing from its relation's tables (PyTorch-BigGraph's sampling; room is reserved for
the most chunks a batch can have, unused owners look up row 0 of the first table). Each slot is a
bag of size 1 in its table's feature and empty in the others, so table t's pooled output at slot
s is the embedding of slot s when s belongs to t.

A relation's positives are cut into chunks of K + 1 (the chunk rule; the last one shorter), and
in-batch negatives pair the positives of a chunk, with no lookups of their own. Relations the
model scores together (a scoring group: same operator kind and tables, `GraphShape.groups`) have
their chunks laid out side by side, one *bucket* per group and chunk width, widest first:

    [group 0: chunks of K + 1 | shorter chunks, by width] [group 1: ...] ... [padding]

so a bucket is consecutive rows, `(chunks, width)` of them, scored as one batched matrix product
whatever the relations in it; each chunk keeps its relation's positives in their given order.
`SlotPieces` (computed by the builder, carried by the batch) says where each bucket and its
negatives are. A short final batch is padded to B with weight-0 edges after the real ones; no
bucket holds them.

Two modules: `layout` (plain Python and numpy, no TorchRec: the chunk rule, `GraphShape`,
`SlotLayout`, the order of positives and the pieces a batch splits into, so the scorer's GPU
benchmark needs only torch) and `edge_batch` (`EdgeBatch`, the tensors TorchRec's pipeline moves).
"""
