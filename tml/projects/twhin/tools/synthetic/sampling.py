"""Edges with power-law endpoints and planted communities, drawn by inverse CDF (vectorised)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tml.projects.twhin.tools.synthetic.schema import GraphSchema

LHS_ZIPF_ALPHA = 0.8
"""Milder skew for the acting side: active users are skewed, but less than celebrities."""
RHS_ZIPF_ALPHA = 1.0
"""Classic Zipf skew for the receiving side (followed accounts, viral tweets)."""
MAX_SELF_LOOP_RESAMPLES = 8


@dataclass
class TableSampler:
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
    def build(cls, size: int, num_communities: int, rng: np.random.Generator) -> TableSampler:
        """Assign random communities and scattered Zipf popularities to ``size`` entities."""
        community = rng.integers(0, num_communities, size=size, dtype=np.int64)
        return cls.with_communities(community, num_communities, rng)

    @classmethod
    def with_communities(
        cls, community: np.ndarray, num_communities: int, rng: np.random.Generator
    ) -> TableSampler:
        """Scattered Zipf popularities for entities of the given communities."""
        size = len(community)
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


def generate_edges(
    n: int,
    schema: GraphSchema,
    mix: np.ndarray,
    samplers: dict[str, TableSampler],
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
    ls: TableSampler,
    rs: TableSampler,
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
    ls: TableSampler,
    rs: TableSampler,
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
