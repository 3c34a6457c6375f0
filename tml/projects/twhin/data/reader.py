"""Reading planned pieces of edge files, checking every value on the way in.

A null, a `rel` outside the relations or an id outside its table stops the job with the file,
row group and file row, as the rows are read (a row group at a time, so memory stays bounded).
"""

from __future__ import annotations

import numpy as np

from tml.projects.twhin.data.files import COLUMNS, DataError
from tml.projects.twhin.data.plan import EdgePlan, Piece


class EdgeReader:
    """Reads pieces of a plan's files as (lhs, rel, rhs) int64 rows."""

    def __init__(self, plan: EdgePlan, relation_table_sizes: list[tuple[int, int]]) -> None:
        self.plan = plan
        self._relation_sizes = np.asarray(relation_table_sizes, dtype=np.int64)

    def read(self, pieces: list[Piece]) -> np.ndarray:
        """The pieces' edges, concatenated in order."""
        return np.concatenate([self._read_piece(piece) for piece in pieces])

    def _read_piece(self, piece: Piece) -> np.ndarray:
        files = self.plan.files
        table = files.open(piece.file).read_row_group(piece.row_group, columns=COLUMNS)
        table = table.slice(piece.start, piece.num_rows)
        where = f"{files.paths[piece.file]} row group {piece.row_group}"
        columns = []
        for name in COLUMNS:
            column = table.column(name)
            if column.null_count:
                nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False))
                raise DataError(f"{where}: null {name} at file row {self._first_row(piece, nulls)}")
            columns.append(column.to_numpy().astype(np.int64, copy=False))
        edges = np.stack(columns, axis=1)
        self._check_values(edges, piece, where)
        return edges

    def _check_values(self, edges: np.ndarray, piece: Piece, where: str) -> None:
        lhs, rel, rhs = edges[:, 0], edges[:, 1], edges[:, 2]
        num_relations = len(self._relation_sizes)
        bad = (rel < 0) | (rel >= num_relations)
        if bad.any():
            row = self._first_row(piece, bad)
            raise DataError(
                f"{where}: rel={rel[bad][0]} at file row {row} is outside [0, {num_relations}) "
                "(rel indexes model.relations)"
            )
        sizes = self._relation_sizes[rel]
        for side, ids, limit in (("lhs", lhs, sizes[:, 0]), ("rhs", rhs, sizes[:, 1])):
            bad = (ids < 0) | (ids >= limit)
            if bad.any():
                row = self._first_row(piece, bad)
                raise DataError(
                    f"{where}: {side}={ids[bad][0]} at file row {row} is outside "
                    f"[0, {limit[bad][0]}) of its table (relation {rel[bad][0]})"
                )

    def _first_row(self, piece: Piece, bad: np.ndarray) -> int:
        """Row number within the file (0-based) of the first flagged row of a piece."""
        group_start = self.plan.row_group_start[(piece.file, piece.row_group)]
        return int(np.flatnonzero(bad)[0]) + piece.start + group_start
