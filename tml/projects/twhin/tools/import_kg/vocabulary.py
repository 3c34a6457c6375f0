"""Names -> dense integer ids: one vocabulary per entity table, one id per relation.

Ids follow first appearance, and each relation is pinned to the (lhs table, rhs table) pair of its
first row, because the trainer gives every relation exactly one pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from tml.projects.twhin.tools.import_kg.errors import KgImportError
from tml.projects.twhin.tools.import_kg.reading import Rows

DEFAULT_TABLE = "entity"


@dataclass
class Relation:
    name: str
    lhs: int  # table index
    rhs: int
    where: str  # "file: line N" of the row that fixed lhs/rhs
    count: int = 0  # train edges


@dataclass
class Vocabulary:
    """Names -> dense ids per table and per relation, in order of first appearance."""

    types: dict[str, str] | None
    types_path: str | None
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    relations: dict[str, int] = field(default_factory=dict)
    relation_names: list[str] = field(default_factory=list)
    relation_info: list[Relation] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.types is None:
            self.tables[DEFAULT_TABLE] = {}

    def encode(self, path: str, rows: Rows, split: str) -> tuple[np.ndarray, ...]:
        """(lhs, rel, rhs) ids of a block, growing the vocabularies with its new names."""
        heads, relations, tails = rows.columns
        n = len(rows)
        rel = self._relation_ids(relations)
        # Interleave heads and tails so dictionary order is first appearance, head before tail.
        order = np.empty(2 * n, dtype=np.int64)
        order[0::2] = np.arange(n)
        order[1::2] = np.arange(n) + n
        both = pa.concat_arrays([heads, tails]).take(pa.array(order))
        encoded = both.dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        entity_id, entity_table = self._entity_ids(encoded.dictionary)
        head_codes, tail_codes = codes[0::2], codes[1::2]
        lhs, rhs = entity_id[head_codes], entity_id[tail_codes]
        self._check_sides(path, rows, rel, entity_table[head_codes], entity_table[tail_codes])
        if split == "train":
            counts = np.bincount(rel, minlength=len(self.relation_info))
            for info, count in zip(self.relation_info, counts.tolist(), strict=True):
                info.count += count
        return lhs, rel, rhs

    def _relation_ids(self, relations: pa.Array) -> np.ndarray:
        encoded = relations.dictionary_encode()
        lookup = np.empty(len(encoded.dictionary), dtype=np.int64)
        for code, name in enumerate(encoded.dictionary.to_pylist()):
            if name not in self.relations:
                self.relations[name] = len(self.relation_names)
                self.relation_names.append(name)
            lookup[code] = self.relations[name]
        return lookup[encoded.indices.to_numpy(zero_copy_only=False)]

    def _entity_ids(self, dictionary: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Id and table index of each name of a block's dictionary (-1 for a name without type)."""
        ids = np.empty(len(dictionary), dtype=np.int64)
        tables = np.empty(len(dictionary), dtype=np.int64)
        table_index = {table: index for index, table in enumerate(self.tables)}
        for code, name in enumerate(dictionary.to_pylist()):
            table: str | None
            if self.types is None:
                table = DEFAULT_TABLE
            else:
                table = self.types.get(name)
                if table is None:  # reported by _check_sides, in line order with its problems
                    ids[code] = tables[code] = -1
                    continue
                if table not in self.tables:
                    table_index[table] = len(self.tables)
                    self.tables[table] = {}
            vocab = self.tables[table]
            ids[code] = vocab.setdefault(name, len(vocab))
            tables[code] = table_index[table]
        return ids, tables

    def _check_sides(
        self, path: str, rows: Rows, rel: np.ndarray, lhs: np.ndarray, rhs: np.ndarray
    ) -> None:
        """Every entity has a type, and each relation joins one (lhs table, rhs table) pair: the
        trainer has one pair per relation. Reports the first offending line of the block."""
        # New relations of this block have the next ids, so ascending order appends them in order.
        relations, first_rows = np.unique(rel, return_index=True)
        for relation, row in zip(relations.tolist(), first_rows.tolist(), strict=True):
            if relation == len(self.relation_info):
                where = f"{path}: line {rows.first_line + row}"
                name = self.relation_names[relation]
                self.relation_info.append(Relation(name, int(lhs[row]), int(rhs[row]), where))
        expected_lhs = np.array([info.lhs for info in self.relation_info], dtype=np.int64)
        expected_rhs = np.array([info.rhs for info in self.relation_info], dtype=np.int64)
        untyped = (lhs < 0) | (rhs < 0)
        bad = untyped | (expected_lhs[rel] != lhs) | (expected_rhs[rel] != rhs)
        if not bad.any():
            return
        row = int(np.flatnonzero(bad)[0])
        where = f"{path}: line {rows.first_line + row}"
        if untyped[row]:
            column = rows.columns[0] if lhs[row] < 0 else rows.columns[2]
            raise KgImportError(
                f"{where}: entity {column[row].as_py()!r} has no type in {self.types_path}"
            )
        info = self.relation_info[int(rel[row])]
        table_names = list(self.tables)
        raise KgImportError(
            f"{where}: relation {info.name!r} joins {table_names[int(lhs[row])]} -> "
            f"{table_names[int(rhs[row])]} here but {table_names[info.lhs]} -> "
            f"{table_names[info.rhs]} at {info.where}; a relation must connect one pair of types"
        )
