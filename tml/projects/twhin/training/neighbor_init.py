"""`warm_start.new_rows: neighbor_mean`: a new entity starts at the mean of its old neighbours.

For each training edge between a new row and an old one, the old neighbour's embedding is
carried into the new entity's space through the edge's relation: `op_r(e_lhs)` for a new rhs;
for a new lhs, `rev_r(e_rhs)` with reciprocal relations, else the operator's adjoint applied to
`e_rhs - op_r(0)` (an exact inverse for translations, the direction that scores highest under a
dot product for the diagonal, complex and linear operators). Only relations carried from the
previous version take part; new entities without an old neighbour keep their random rows.

Nothing holds a whole table: rank r reads its 1/world_size of each old table's rows from the
checkpoint (in row windows, tml artifacts' `iter_table_rows`), scans the training edges for the
edges whose old end falls in those rows, and sums their contributions per new row. The sums and
counts of the new rows (the size of the growth, not of the table) are all-reduced, and each rank
writes the means into the new rows of its own shards.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.distributed as dist

from tml.core.leading_rows import local_pieces
from tml.projects.twhin.artifacts.checkpoints import iter_table_rows
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.dataset import EdgeDataset
from tml.projects.twhin.models.model import table_weight_key
from tml.projects.twhin.models.scorer import EdgeScorer
from tml.projects.twhin.parallel.sharded_model import ShardedTwhin

PLACED_NORM = 0.5
"""A placed row's norm, as a fraction of its table's mean row norm. A mean of neighbours is short
(their differences cancel) and would barely count; at the full norm the placed rows, not yet
refined, outrank the right answers of old entities (hubs). Picked on the validation split of
`make bench-versions` (docs/graph-versions.md): MRR after 29 steps 0.230 unscaled, 0.240 at the
full norm, 0.246 at half of it, which also reached the from-scratch MRR soonest."""


class _OldRows:
    """This rank's share of one old table: rows [start, start + len(rows))."""

    def __init__(self, checkpoint: Path, config: TwhinConfig, table: str, old_rows: int) -> None:
        spec = next(t for t in config.model.embeddings.tables if t.name == table)
        spec = spec.model_copy(update={"num_embeddings": old_rows})
        rank = dist.get_rank() if dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_initialized() else 1
        windows = list(iter_table_rows(checkpoint, spec, part=rank, parts=world))
        self.start = windows[0][0] if windows else 0
        self.rows = (
            torch.cat([w for _, w in windows]).float()
            if windows
            else torch.empty(0, spec.embedding_dim)
        )

    def holds(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.start) & (ids < self.start + len(self.rows))

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows[ids - self.start]


def _toward_lhs(scorer: EdgeScorer, relation: int, rhs: torch.Tensor) -> torch.Tensor:
    """Where an lhs sits that scores well with these rhs embeddings (see the module docstring)."""
    # `operators[r]` / `reverse_operators[r]`: the per-relation views of any scorer layout.
    if scorer.reverse_operators is not None:
        return scorer.reverse_operators[relation](rhs)
    operator = scorer.operators[relation]
    origin = torch.zeros(1, rhs.shape[-1], requires_grad=True)
    with torch.enable_grad():
        shift = operator(origin)  # op(0): the translation part of an affine operator
        point = torch.zeros(rhs.shape[0], shift.shape[-1], requires_grad=True)
        target = rhs - shift.detach()
        (grad,) = torch.autograd.grad((operator(point) * target).sum(), point)
    return grad  # J^T (rhs - op(0)): the adjoint, J constant for affine operators


def place_new_rows(
    sharded: ShardedTwhin,
    config: TwhinConfig,
    checkpoint: Path,
    grown: dict[str, tuple[int, int]],
    data: EdgeDataset,
    carried: list[bool],
) -> dict[str, int]:
    """Set the new rows of the grown tables to their old neighbours' mean; table -> rows placed."""
    tables = {t.name: t for t in config.model.embeddings.tables}
    old_rows = {name: table.num_embeddings for name, table in tables.items()}
    old_rows.update({name: old for name, (old, _) in grown.items()})
    involved = {
        side
        for index, relation in enumerate(config.model.relations)
        if carried[index] and (relation.lhs in grown or relation.rhs in grown)
        for side in (relation.lhs, relation.rhs)
    }
    mine = {name: _OldRows(checkpoint, config, name, old_rows[name]) for name in involved}
    sums = {
        name: torch.zeros(new - old, tables[name].embedding_dim)
        for name, (old, new) in grown.items()
    }
    counts = {name: torch.zeros(new - old) for name, (old, new) in grown.items()}
    # A CPU copy: the edges and old rows are read into host memory.
    scorer: EdgeScorer = copy.deepcopy(sharded.model.module.scorer).cpu()
    means, norms = _table_stats(mine)
    with torch.no_grad():
        for piece in data.plan.pieces:
            edges = torch.from_numpy(data.reader.read([piece]))
            for index, relation in enumerate(config.model.relations):
                if not carried[index]:
                    continue
                lhs, rhs = edges[edges[:, 1] == index][:, 0], edges[edges[:, 1] == index][:, 2]
                if relation.rhs in grown:  # new rhs, old lhs in this rank's rows
                    keep = (rhs >= old_rows[relation.rhs]) & mine[relation.lhs].holds(lhs)
                    keep &= lhs < old_rows[relation.lhs]
                    operator = scorer.operators[index]
                    moved = operator(mine[relation.lhs][lhs[keep]])
                    moved += means[relation.rhs] - operator(means[relation.lhs])
                    _add(sums, counts, relation.rhs, rhs[keep] - old_rows[relation.rhs], moved)
                if relation.lhs in grown:  # new lhs, old rhs in this rank's rows
                    keep = (lhs >= old_rows[relation.lhs]) & mine[relation.rhs].holds(rhs)
                    keep &= rhs < old_rows[relation.rhs]
                    moved = _toward_lhs(scorer, index, mine[relation.rhs][rhs[keep]])
                    moved += means[relation.lhs] - _toward_lhs(scorer, index, means[relation.rhs])
                    _add(sums, counts, relation.lhs, lhs[keep] - old_rows[relation.lhs], moved)
    return _write_means(sharded, grown, sums, counts, norms)


def _table_stats(mine: dict[str, _OldRows]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The mean old row `(1, dim)` and the mean row norm of each table, over all ranks' parts."""
    means, norms = {}, {}
    for name, part in mine.items():
        count = torch.tensor([float(len(part.rows)), float(part.rows.norm(dim=1).sum())])
        total = torch.cat([part.rows.sum(0), count])
        if dist.is_initialized():
            total = _all_reduced(total)
        rows = total[-2].clamp(min=1)
        means[name] = (total[:-2] / rows).unsqueeze(0)
        norms[name] = float(total[-1] / rows)
    return means, norms


def _all_reduced(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over the ranks (NCCL reduces CUDA tensors only)."""
    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    moved = tensor.to(device)
    dist.all_reduce(moved)
    return moved.cpu()


def _add(
    sums: dict[str, torch.Tensor],
    counts: dict[str, torch.Tensor],
    table: str,
    rows: torch.Tensor,
    values: torch.Tensor,
) -> None:
    sums[table].index_add_(0, rows, values.detach().float())
    counts[table].index_add_(0, rows, torch.ones(len(rows)))


def _write_means(
    sharded: ShardedTwhin,
    grown: dict[str, tuple[int, int]],
    sums: dict[str, torch.Tensor],
    counts: dict[str, torch.Tensor],
    norms: dict[str, float],
) -> dict[str, int]:
    """All-reduce the sums and counts, then write each mean, scaled to the table's mean row
    norm, into the shard that holds its row."""
    state = sharded.model.state_dict()
    placed = {}
    for name, (old, _) in grown.items():
        if dist.is_initialized():
            sums[name], counts[name] = _all_reduced(sums[name]), _all_reduced(counts[name])
        has = counts[name] > 0
        placed[name] = int(has.sum())
        means = sums[name] / counts[name].clamp(min=1).unsqueeze(1)
        scale = PLACED_NORM * norms.get(name, 1.0)
        means *= scale / means.norm(dim=1, keepdim=True).clamp(min=1e-12)
        for shard, (row0, col0) in local_pieces(state[table_weight_key(name)]):
            first = max(old - row0, 0)  # the shard's first new row
            if first >= shard.shape[0]:
                continue
            new_index = torch.arange(row0 + first - old, row0 + shard.shape[0] - old)
            rows = torch.arange(first, shard.shape[0])[has[new_index]]
            values = means[new_index[has[new_index]], col0 : col0 + shard.shape[1]]
            shard[rows] = values.to(shard.device, shard.dtype)
    sharded.model.load_state_dict(
        {table_weight_key(name): state[table_weight_key(name)] for name in grown}, strict=False
    )
    return placed
